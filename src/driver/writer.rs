//! The writer thread: runs [`StorageOp`]s in order with blocking file I/O, off the control
//! thread, and reports spool creation back so the control thread can answer the INVITE.

use std::sync::mpsc;
use std::thread;

use tokio::sync::mpsc::UnboundedSender;

use crate::control::{SessionKey, StorageOp};
use crate::record::Spool;

/// What the writer tells the control thread.
#[derive(Debug)]
pub enum WriterReport {
    Begun {
        session: SessionKey,
        result: Result<(), String>,
    },
    Finalized {
        id: String,
        result: Result<String, String>,
    },
    Recovered {
        count: usize,
    },
    Error,
}

pub struct Writer {
    pub ops: mpsc::Sender<StorageOp>,
    pub handle: thread::JoinHandle<()>,
}

/// Starts the writer: it first finalizes what a crash left in the spool, then takes ops.
pub fn start(spool: Spool, reports: UnboundedSender<WriterReport>) -> std::io::Result<Writer> {
    let (tx, rx) = mpsc::channel::<StorageOp>();
    let handle = thread::Builder::new()
        .name("reel-writer".into())
        .spawn(move || {
            let recovered = spool.recover();
            for path in &recovered {
                tracing::info!(path = %path.display(), "recovered a spooled session as partial");
            }
            let _ = reports.send(WriterReport::Recovered {
                count: recovered.len(),
            });
            while let Ok(op) = rx.recv() {
                run(&spool, op, &reports);
            }
        })?;
    Ok(Writer { ops: tx, handle })
}

fn run(spool: &Spool, op: StorageOp, reports: &UnboundedSender<WriterReport>) {
    match op {
        StorageOp::Begin { session, meta } => {
            let result = spool.save_state(&meta).map_err(|e| e.to_string());
            if let Err(e) = &result {
                tracing::error!(id = %meta.id, error = %e, "cannot create the spool entry");
            }
            let _ = reports.send(WriterReport::Begun { session, result });
        }
        StorageOp::Save { meta } => {
            if let Err(e) = spool.save_state(&meta) {
                tracing::error!(id = %meta.id, error = %e, "cannot save session state");
                let _ = reports.send(WriterReport::Error);
            }
        }
        StorageOp::Metadata { id, xml } => {
            if let Err(e) = spool.add_metadata_version(&id, &xml) {
                tracing::error!(id = %id, error = %e, "cannot store metadata");
                let _ = reports.send(WriterReport::Error);
            }
        }
        StorageOp::Finalize { meta, .. } => {
            let result = spool.finalize(&meta).map(|p| p.display().to_string());
            match &result {
                Ok(path) => tracing::info!(id = %meta.id, call_id = %meta.call_id,
                    reason = %meta.end_reason, path = %path, "recording finalized"),
                Err(e) => tracing::error!(id = %meta.id, error = %e, "finalize failed"),
            }
            let _ = reports.send(WriterReport::Finalized {
                id: meta.id.clone(),
                result: result.map_err(|e| e.to_string()),
            });
        }
        StorageOp::Abandon { id } => {
            if let Err(e) = spool.abandon(&id) {
                tracing::warn!(id = %id, error = %e, "cannot remove an abandoned spool entry");
            }
        }
    }
}
