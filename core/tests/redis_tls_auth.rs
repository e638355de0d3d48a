//! rediss:// with a private CA, and password authentication, against a real
//! redis-server started here with TLS only (no plain port). Certificates are
//! made with the openssl command line.
#![cfg(feature = "redis")]

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use pillarbox::{connect, Message, ReceiveRequest};

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn openssl(dir: &Path, args: &[&str]) {
    let ok = Command::new("openssl").args(args).current_dir(dir).stderr(Stdio::null()).status().unwrap().success();
    assert!(ok, "openssl {args:?} failed");
}

/// A CA, and a server certificate for 127.0.0.1 signed by it.
fn make_certs(dir: &Path) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=pillarbox-test-ca",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ],
    );
    std::fs::write(dir.join("san.ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "san.ext",
            "-out",
            "server.pem",
        ],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_private_ca_and_password() {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let dir = std::env::temp_dir().join(format!("pillarbox-redis-tls-{port}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    make_certs(&dir);
    let d = |f: &str| dir.join(f).display().to_string();
    let _server = Server(
        Command::new("redis-server")
            .args(["--port", "0", "--bind", "127.0.0.1", "--tls-port", &port.to_string(), "--save", ""])
            .args([
                "--tls-cert-file",
                &d("server.pem"),
                "--tls-key-file",
                &d("server.key"),
                "--tls-ca-cert-file",
                &d("ca.pem"),
            ])
            .args(["--tls-auth-clients", "no", "--requirepass", "s3cret-pw", "--dir", &d("")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be on PATH"),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "redis-server did not start");
        std::thread::sleep(Duration::from_millis(50));
    }

    let url = format!("rediss://:s3cret-pw@127.0.0.1:{port}/0?tls_ca_file={}", d("ca.pem"));
    let broker = connect(&url).await.unwrap_or_else(|e| panic!("TLS connect failed: {e}"));
    broker.ensure_group("secure", "g").await.unwrap();
    broker.publish("secure", vec![Message::new("over TLS")]).await.unwrap();
    let got = broker
        .receive(ReceiveRequest {
            topic: "secure",
            group: "g",
            consumer: "c",
            max: 1,
            window: 1,
            wait: Duration::from_secs(5),
            lease: Duration::from_secs(5),
        })
        .await
        .unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(&got[0].message.payload[..], b"over TLS");
    broker.ack(&got).await.unwrap();
    assert!(!format!("{broker:?}").contains("s3cret-pw"), "Debug output shows the password");

    // The system trust store does not know our CA: a clear connection error.
    let untrusted = connect(&format!("rediss://:s3cret-pw@127.0.0.1:{port}")).await.unwrap_err();
    assert_eq!(untrusted.code(), "CONNECT", "{untrusted}");
    // A wrong password: a clear error that shows neither password.
    let wrong = connect(&format!("rediss://:wrong-pw@127.0.0.1:{port}?tls_ca_file={}", d("ca.pem"))).await.unwrap_err();
    let text = wrong.to_string();
    assert!(!text.contains("wrong-pw") && !text.contains("s3cret-pw"), "{text}");
    // Plain TCP to a TLS port fails rather than hanging.
    let plain = tokio::time::timeout(
        Duration::from_secs(20),
        connect(&format!("redis://:s3cret-pw@127.0.0.1:{port}?connect_timeout_ms=2000&response_timeout_ms=2000")),
    )
    .await
    .expect("plain connect to a TLS port hung");
    assert!(plain.is_err());
    // A TLS option on a plain URL is a clear option error.
    let e = connect(&format!("redis://127.0.0.1:{port}?tls_ca_file={}", d("ca.pem"))).await.unwrap_err();
    assert_eq!(e.code(), "INVALID_OPTION");
    let _ = std::fs::remove_dir_all(&dir);
}
