//! The registry of tasks, the handles that publish calls, and the handler
//! that runs them in a worker.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use serde_json::{Map, Value};
use tokio::sync::OnceCell;

use super::envelope::{headers, TaskCall, UNKNOWN_TASK};
use crate::broker::Broker;
use crate::error::{Error, Result};
use crate::message::{validate_name, Message};
use crate::schedule::{Schedule, Upserted, When};
use crate::worker::{Handler, HandlerError, Job, RetryPolicy, Worker, WorkerOptions};

/// The group that runs an app's tasks on each topic (the same in every language).
pub const DEFAULT_GROUP: &str = "workers";
/// Where tasks go unless they name a topic (the same in every language).
pub const DEFAULT_TOPIC: &str = "tasks";

type TaskFuture = Pin<Box<dyn Future<Output = std::result::Result<(), HandlerError>> + Send>>;
type RunTask = Arc<dyn Fn(TaskCall, Job) -> TaskFuture + Send + Sync>;
type KeyRule = Arc<dyn Fn(&TaskCall) -> Option<String> + Send + Sync>;

/// How a task is registered. Every field has a default.
#[derive(Clone, Default)]
#[non_exhaustive]
pub struct TaskOptions {
    /// The topic its calls go to. Default: the app's default topic.
    pub topic: Option<String>,
    /// The retry policy of its topic's worker (tasks of one topic share one).
    /// Default: the worker options' policy.
    pub retry: Option<RetryPolicy>,
    /// The idempotency key each call carries unless the call names one,
    /// computed from the call: the task then runs once per key.
    pub idempotency_key: Option<KeyRule>,
}

impl std::fmt::Debug for TaskOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskOptions")
            .field("topic", &self.topic)
            .field("retry", &self.retry)
            .field("idempotency_key", &self.idempotency_key.is_some())
            .finish()
    }
}

impl TaskOptions {
    /// Sets the topic.
    pub fn topic(mut self, topic: impl Into<String>) -> Self {
        self.topic = Some(topic.into());
        self
    }
    /// Sets the retry policy of the task's topic.
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = Some(policy);
        self
    }
    /// Sets the rule that gives each call its idempotency key.
    pub fn idempotency_key(mut self, rule: impl Fn(&TaskCall) -> Option<String> + Send + Sync + 'static) -> Self {
        self.idempotency_key = Some(Arc::new(rule));
        self
    }
}

/// One call's options beside its arguments (Celery's `apply_async`).
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct Apply {
    /// Positional arguments.
    pub args: Vec<Value>,
    /// Keyword arguments.
    pub kwargs: Map<String, Value>,
    /// Run no sooner than this long from now.
    pub countdown: Option<Duration>,
    /// Run no sooner than this time.
    pub eta: Option<SystemTime>,
    /// Ordering / routing key.
    pub key: Option<String>,
    /// The task runs once per key (default: the task's own rule, if any).
    pub idempotency_key: Option<String>,
    /// Headers besides the `task` header.
    pub headers: BTreeMap<String, String>,
}

impl Apply {
    /// A call with these positional arguments.
    pub fn args(args: Vec<Value>) -> Self {
        Apply { args, ..Self::default() }
    }
    /// Adds a keyword argument.
    pub fn kwarg(mut self, name: impl Into<String>, value: Value) -> Self {
        self.kwargs.insert(name.into(), value);
        self
    }
    /// Sets every keyword argument.
    pub fn kwargs(mut self, kwargs: Map<String, Value>) -> Self {
        self.kwargs = kwargs;
        self
    }
    /// Runs no sooner than `delay` from now.
    pub fn countdown(mut self, delay: Duration) -> Self {
        self.countdown = Some(delay);
        self
    }
    /// Runs no sooner than `at`.
    pub fn eta(mut self, at: SystemTime) -> Self {
        self.eta = Some(at);
        self
    }
    /// Sets the ordering key.
    pub fn key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }
    /// Sets the idempotency key.
    pub fn idempotency_key(mut self, key: impl Into<String>) -> Self {
        self.idempotency_key = Some(key.into());
        self
    }
    /// Adds a header.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.insert(name.into(), value.into());
        self
    }
}

/// The topics whose worker group an app has made, shared by all its tasks
/// and signatures: a group is made once per topic, not once per call (a
/// round trip to the broker each).
#[derive(Default)]
struct Groups(Mutex<HashMap<String, Arc<OnceCell<()>>>>);

impl Groups {
    fn of(&self, topic: &str) -> Arc<OnceCell<()>> {
        Arc::clone(self.0.lock().unwrap().entry(topic.to_string()).or_default())
    }
}

/// A task to call: one registered here, or one that runs elsewhere (another
/// service, another language) named with [`App::signature`]. Cheap to clone.
#[derive(Clone)]
pub struct Task {
    broker: Arc<dyn Broker>,
    name: Arc<str>,
    topic: Arc<str>,
    group: Arc<str>,
    idempotency_key: Option<KeyRule>,
    /// The worker's group exists before the first call goes out, so that a
    /// broker that routes by subscription (RabbitMQ) keeps it.
    groups: Arc<Groups>,
}

impl std::fmt::Debug for Task {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Task").field("name", &self.name).field("topic", &self.topic).finish_non_exhaustive()
    }
}

impl Task {
    /// The task's registered name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The topic its calls go to.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The same task, its calls going to `topic`.
    pub fn on_topic(mut self, topic: &str) -> Result<Self> {
        validate_name("topic", topic)?;
        self.topic = topic.into();
        Ok(self)
    }

    /// Publishes a call with these positional arguments; returns the message id.
    pub async fn delay(&self, args: Vec<Value>) -> Result<String> {
        self.apply_async(Apply::args(args)).await
    }

    /// Publishes a call; returns the message id.
    pub async fn apply_async(&self, apply: Apply) -> Result<String> {
        let call = TaskCall { task: self.name.to_string(), args: apply.args, kwargs: apply.kwargs };
        let idempotency_key =
            apply.idempotency_key.or_else(|| self.idempotency_key.as_ref().and_then(|rule| rule(&call)));
        let mut message = Message::new(call.to_payload()).with_content_type("application/json");
        message.headers = headers(&self.name, apply.headers);
        message.key = apply.key;
        message.idempotency_key = idempotency_key;
        if let Some(delay) = apply.countdown {
            message = message.with_delay(delay);
        }
        if let Some(at) = apply.eta {
            message = message.with_deliver_at(at);
        }
        let id = message.id.clone();
        let grouped = self.groups.of(&self.topic);
        grouped.get_or_try_init(|| self.broker.ensure_group(&self.topic, &self.group)).await?;
        self.broker.publish(&self.topic, vec![message]).await?;
        Ok(id)
    }

    /// The schedule `name` that calls this task with `call`'s args and
    /// kwargs at each tick of `when` (set its `misfire`, `start` and `end`
    /// before [`App::schedule`] keeps it).
    pub fn schedule(&self, name: &str, when: When, call: Apply) -> Result<Schedule> {
        let payload = TaskCall { task: self.name.to_string(), args: call.args, kwargs: call.kwargs }.to_payload();
        let mut message = Message::new(payload).with_content_type("application/json");
        message.headers = headers(&self.name, BTreeMap::new());
        Schedule::new(name, when, &self.topic, &message)
    }
}

/// Tasks, the broker their calls go through, and the workers that run them:
/// the Rust side of the task layer every language has (docs/tasks.md), so a
/// Rust service runs what a Django app `.delay()`s and calls tasks a Node
/// worker runs.
///
/// ```no_run
/// # async fn demo() -> pillarbox::Result<()> {
/// use pillarbox::tasks::App;
/// use pillarbox::{HandlerError, WorkerOptions};
///
/// let mut app = App::new(pillarbox::connect("redis://localhost").await?);
/// let send = app.task("emails.send_welcome", |call, _job| async move {
///     let to: String = call.arg(0)?;
///     println!("welcome, {to}");
///     Ok::<(), HandlerError>(())
/// })?;
/// send.delay(pillarbox::tasks::to_args(("ada@example.com",))?).await?;
/// for worker in app.workers(WorkerOptions::default().concurrency(4)).await? {
///     tokio::spawn(async move { worker.run().await });
/// }
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct App {
    broker: Arc<dyn Broker>,
    group: String,
    default_topic: String,
    tasks: HashMap<String, Registered>,
    retry: HashMap<String, RetryPolicy>,
    groups: Arc<Groups>,
}

#[derive(Clone)]
struct Registered {
    task: Task,
    run: RunTask,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut names: Vec<&String> = self.tasks.keys().collect();
        names.sort();
        f.debug_struct("App").field("group", &self.group).field("tasks", &names).finish_non_exhaustive()
    }
}

impl App {
    /// An app over `broker`, with the default group and topic.
    pub fn new(broker: Arc<dyn Broker>) -> Self {
        App {
            broker,
            group: DEFAULT_GROUP.into(),
            default_topic: DEFAULT_TOPIC.into(),
            tasks: HashMap::new(),
            retry: HashMap::new(),
            groups: Arc::default(),
        }
    }

    /// Runs the tasks in `group` instead of [`DEFAULT_GROUP`].
    pub fn with_group(mut self, group: &str) -> Result<Self> {
        validate_name("group", group)?;
        self.group = group.into();
        Ok(self)
    }

    /// Sends tasks that name no topic to `topic` instead of [`DEFAULT_TOPIC`].
    pub fn with_default_topic(mut self, topic: &str) -> Result<Self> {
        validate_name("topic", topic)?;
        self.default_topic = topic.into();
        Ok(self)
    }

    /// The broker the app's calls go through.
    pub fn broker(&self) -> &Arc<dyn Broker> {
        &self.broker
    }

    /// Registers a task on the default topic; see [`App::task_with`].
    pub fn task<F, Fut>(&mut self, name: &str, run: F) -> Result<Task>
    where
        F: Fn(TaskCall, Job) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = std::result::Result<(), HandlerError>> + Send + 'static,
    {
        self.task_with(name, TaskOptions::default(), run)
    }

    /// Registers a task: `run` gets the call (see [`TaskCall::arg`] and
    /// [`TaskCall::kwarg`]) and the job, and fails as any handler does.
    pub fn task_with<F, Fut>(&mut self, name: &str, options: TaskOptions, run: F) -> Result<Task>
    where
        F: Fn(TaskCall, Job) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = std::result::Result<(), HandlerError>> + Send + 'static,
    {
        if name.is_empty() {
            return Err(Error::invalid_option("name", "a task needs a name"));
        }
        if self.tasks.contains_key(name) {
            return Err(Error::invalid_option("name", format!("a task named {name} is already registered")));
        }
        let mut task = self.signature(name);
        if let Some(topic) = &options.topic {
            task = task.on_topic(topic)?;
        }
        task.idempotency_key = options.idempotency_key;
        if let Some(policy) = options.retry {
            policy.validate()?;
            match self.retry.get(&*task.topic) {
                Some(known) if *known != policy => {
                    return Err(Error::invalid_option(
                        "retry",
                        format!(
                            "task {name}: topic {} already has another retry policy; tasks of one topic share one \
                             (give this task a topic of its own)",
                            task.topic
                        ),
                    ))
                }
                _ => self.retry.insert(task.topic.to_string(), policy),
            };
        }
        let run: RunTask = Arc::new(move |call, job| Box::pin(run(call, job)));
        self.tasks.insert(name.to_string(), Registered { task: task.clone(), run });
        Ok(task)
    }

    /// A task registered elsewhere (another service, another language), to
    /// call by name: on the default topic unless [`Task::on_topic`] says.
    pub fn signature(&self, name: &str) -> Task {
        Task {
            broker: Arc::clone(&self.broker),
            name: name.into(),
            topic: self.default_topic.as_str().into(),
            group: self.group.as_str().into(),
            idempotency_key: None,
            groups: Arc::clone(&self.groups),
        }
    }

    /// Keeps `schedule` (from [`Task::schedule`]) in the broker's schedule
    /// store, after making sure its topic's group exists; says whether it
    /// was created, updated or unchanged. A [`Scheduler`] publishes its
    /// ticks: `Scheduler::for_broker(app.broker().clone())`.
    ///
    /// [`Scheduler`]: crate::schedule::Scheduler
    pub async fn schedule(&self, schedule: &Schedule) -> Result<Upserted> {
        let store = self
            .broker
            .schedule_store()
            .ok_or(Error::Unsupported { backend: self.broker.backend(), capability: "schedules" })?;
        self.broker.ensure_group(&schedule.topic, &self.group).await?;
        store.upsert(schedule).await
    }

    /// The topics the registered tasks go to, sorted.
    pub fn topics(&self) -> Vec<String> {
        let topics: BTreeSet<&str> = self.tasks.values().map(|r| &*r.task.topic).collect();
        topics.into_iter().map(str::to_string).collect()
    }

    /// The handler that runs the registered tasks from a topic's messages:
    /// a message that is not an envelope dead-letters with kind
    /// `InvalidEnvelope`, a call of a task not registered here with
    /// `UnknownTask`.
    pub fn handler(&self) -> impl Handler {
        let tasks: HashMap<String, RunTask> =
            self.tasks.iter().map(|(name, r)| (name.clone(), Arc::clone(&r.run))).collect();
        Dispatch { tasks: Arc::new(tasks) }
    }

    /// One worker per topic of the registered tasks, with each topic's retry
    /// policy where a task gave one, after making sure each topic's group
    /// exists. Run each with [`Worker::run`].
    pub async fn workers(&self, options: WorkerOptions) -> Result<Vec<Worker>> {
        let topics = self.topics();
        if topics.is_empty() {
            return Err(Error::invalid_option("tasks", "no tasks are registered, so there is nothing to run"));
        }
        let handler: Arc<dyn Handler> = Arc::new(self.handler());
        let mut workers = Vec::with_capacity(topics.len());
        for topic in topics {
            self.broker.ensure_group(&topic, &self.group).await?;
            let mut options = options.clone();
            if let Some(policy) = self.retry.get(&topic) {
                options = options.retry(policy.clone());
            }
            workers.push(Worker::with_handler(
                Arc::clone(&self.broker),
                &topic,
                &self.group,
                Arc::clone(&handler),
                options,
            )?);
        }
        Ok(workers)
    }
}

struct Dispatch {
    tasks: Arc<HashMap<String, RunTask>>,
}

#[async_trait]
impl Handler for Dispatch {
    async fn handle(&self, job: Job) -> std::result::Result<(), HandlerError> {
        let call = TaskCall::from_payload(&job.message.payload)?;
        let Some(run) = self.tasks.get(&call.task) else {
            let message = format!("no task named {} is registered in this worker", call.task);
            return Err(HandlerError::fatal(message).with_kind(UNKNOWN_TASK));
        };
        run(call, job).await
    }
}
