//! The consumer groups a topic's streams carry (the keys themselves are
//! `TopicKeys`, in `mod.rs` beside their table): created once per group and
//! handle, and again when Redis lost them. Separate: every operation on a
//! group needs it first, none is about it.

use super::broker::RedisBroker;
use super::{err, TopicKeys};
use crate::error::Result;

impl RedisBroker {
    pub(super) async fn create_group(&self, keys: &TopicKeys, topic: &str, group: &str) -> Result<()> {
        let mut conn = self.conn();
        for stream in [keys.stream.clone(), keys.due(group)] {
            let created: redis::RedisResult<()> = redis::cmd("XGROUP")
                .arg("CREATE")
                .arg(&stream)
                .arg(group)
                .arg("0")
                .arg("MKSTREAM")
                .query_async(&mut conn)
                .await;
            match created {
                Ok(()) => {}
                Err(e) if e.code() == Some("BUSYGROUP") => {}
                Err(e) => return Err(err(e)),
            }
        }
        self.groups_ready.lock().unwrap().insert((topic.to_string(), group.to_string()));
        Ok(())
    }

    pub(super) async fn group_ready(&self, keys: &TopicKeys, topic: &str, group: &str) -> Result<()> {
        if self.groups_ready.lock().unwrap().contains(&(topic.to_string(), group.to_string())) {
            return Ok(());
        }
        self.create_group(keys, topic, group).await
    }
}
