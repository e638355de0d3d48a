//! The Rust core's own figures, measured from the Node benchmark on the same
//! broker in the same run (`benches/compare.js`): what the Node layer costs
//! is the difference. The loops are the core's (`pillarbox::baseline`).

use napi::bindgen_prelude::Result;
use napi_derive::napi;

use crate::errors::OrThrow;

/// Publishes `count` messages of `size` bytes in batches of `batch` (1: one
/// awaited publish at a time); resolves to the seconds it took.
#[napi(js_name = "_benchPublish")]
pub async fn bench_publish(url: String, topic: String, count: u32, batch: u32, size: u32) -> Result<f64> {
    let took = pillarbox::baseline::publish(&url, &topic, count as usize, batch as usize, size as usize).await;
    Ok(took.or_throw()?.as_secs_f64())
}

/// Consumes `count` waiting messages with a no-op Rust handler; resolves to
/// the seconds it took.
#[napi(js_name = "_benchConsume")]
pub async fn bench_consume(
    url: String,
    topic: String,
    group: String,
    count: u32,
    concurrency: u32,
    prefetch: u32,
) -> Result<f64> {
    let took =
        pillarbox::baseline::consume(&url, &topic, &group, u64::from(count), concurrency as usize, prefetch as usize)
            .await;
    Ok(took.or_throw()?.as_secs_f64())
}
