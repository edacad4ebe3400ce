//! Steady HTTP traffic to a service on loopback, so built-in metrics are measured on real
//! requests. Bounded: it stops when dropped.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

/// `GET /` to `127.0.0.1:port` every `every`, counting the successful answers.
pub struct Traffic {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    handle: Option<JoinHandle<()>>,
}

impl Traffic {
    /// Starts the requests on a thread of their own.
    pub fn start(port: u16, every: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let (s, o) = (stop.clone(), ok.clone());
        let handle = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime for the traffic");
            rt.block_on(async move {
                let client = reqwest::Client::new();
                let url = format!("http://127.0.0.1:{port}/");
                while !s.load(Ordering::Relaxed) {
                    if let Ok(r) = client.get(&url).send().await
                        && r.status().is_success()
                    {
                        o.fetch_add(1, Ordering::Relaxed);
                    }
                    tokio::time::sleep(every).await;
                }
            });
        });
        Self {
            stop,
            ok,
            handle: Some(handle),
        }
    }

    /// Successful answers so far.
    pub fn ok(&self) -> u64 {
        self.ok.load(Ordering::Relaxed)
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}
