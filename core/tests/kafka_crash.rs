//! A Kafka broker killed with SIGKILL mid-publish and mid-consume, then
//! started again on the same log: no confirmed publish is lost, and the
//! figures (confirmed, handled, lost, duplicates, time to resume) are
//! reported. Runs a Kafka node of its own (the test node starts with a
//! fresh log each time), from the jars tests/brokers/start-kafka.sh fetched.
#![cfg(feature = "kafka")]

mod support;

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A one-node Kafka (KRaft) on loopback, killed when the test ends.
struct Node {
    dir: PathBuf,
    port: u16,
    child: Mutex<Option<Child>>,
}

impl Node {
    fn java(&self) -> Command {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let lib = root.join(".pillarbox-test/kafka/lib");
        assert!(lib.join(".complete").exists(), "no Kafka jars: run tests/brokers/start-kafka.sh first");
        let mut java = Command::new("java");
        java.arg("-Xmx512m")
            .arg(format!("-Dlog4j.configuration=file:{}", root.join("tests/brokers/kafka/log4j.properties").display()))
            .arg("-cp")
            .arg(format!("{}/*", lib.display()));
        java
    }

    /// Formats a log in a new folder and starts the node on it.
    fn new() -> Arc<Node> {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("kafka-crash-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let (port, controller) = (free_port(), free_port());
        let properties = dir.join("server.properties");
        std::fs::write(
            &properties,
            format!(
                "process.roles=broker,controller\nnode.id=1\ncontroller.quorum.voters=1@127.0.0.1:{controller}\n\
                 listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller}\n\
                 advertised.listeners=PLAINTEXT://127.0.0.1:{port}\ncontroller.listener.names=CONTROLLER\n\
                 inter.broker.listener.name=PLAINTEXT\n\
                 listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT\n\
                 log.dirs={}\nnum.partitions=1\noffsets.topic.replication.factor=1\n\
                 transaction.state.log.replication.factor=1\ntransaction.state.log.min.isr=1\n\
                 group.initial.rebalance.delay.ms=0\nauto.create.topics.enable=false\n",
                dir.join("data").display()
            ),
        )
        .unwrap();
        let node = Arc::new(Node { dir, port, child: Mutex::new(None) });
        let id = node.java().args(["kafka.tools.StorageTool", "random-uuid"]).output().unwrap();
        let id = String::from_utf8_lossy(&id.stdout).lines().last().unwrap_or_default().trim().to_string();
        let formatted = node
            .java()
            .args(["kafka.tools.StorageTool", "format", "-t", &id, "-c"])
            .arg(&properties)
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(formatted.success(), "formatting the Kafka log failed");
        node.start();
        node
    }

    fn start(&self) {
        let log = std::fs::File::create(self.dir.join("kafka.log")).unwrap();
        let child = self
            .java()
            .arg("kafka.Kafka")
            .arg(self.dir.join("server.properties"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("java must be on PATH (tests/brokers/start-kafka.sh installs it)");
        *self.child.lock().unwrap() = Some(child);
        let deadline = Instant::now() + Duration::from_secs(120);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "Kafka did not start; see {}", self.dir.join("kafka.log").display());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGKILL, then the same node on the same log again.
    fn kill_and_start(&self) {
        let mut child = self.child.lock().unwrap().take().expect("running");
        child.kill().unwrap();
        child.wait().unwrap();
        self.start();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.lock().unwrap().take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_mid_publish_and_mid_consume_loses_no_confirmed_message() {
    let node = Node::new();
    let broker = pillarbox::connect(&format!("kafka://127.0.0.1:{}", node.port)).await.unwrap();
    let crashing = Arc::clone(&node);
    let crash = move || crashing.kill_and_start();
    support::through_a_crash("Kafka SIGKILL", Arc::clone(&broker), "crash", 600, Duration::ZERO, false, crash).await;
    let _ = broker.close().await;
}
