//! A thread per transformed session runs its [`Transcoder`]: decoding and encoding take
//! milliseconds per frame and must not hold up the engine's task, which serves every session.
//!
//! Frames never queue without bound: a worker that falls behind decodes every waiting frame (the
//! references must stay intact) but transforms and encodes only the newest, and a full queue
//! drops the frame and asks the browser for a keyframe so decoding can start over cleanly.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};

use huddle_media::codec::Transcoder;
use huddle_media::{SessionId, TranscodeJob, Transform};
use tokio::sync::mpsc::Sender;
use tokio::sync::mpsc::error::TrySendError as ToLoop;

use super::{Command, MediaCounters};

/// Frames waiting per session: two seconds at 30 fps.
const QUEUE: usize = 60;

enum Job {
    Frame(TranscodeJob),
    Keyframe,
    Bitrate(u64),
}

pub(super) struct Transcoders {
    workers: HashMap<SessionId, SyncSender<Job>>,
    back: Sender<Command>,
    counters: Arc<MediaCounters>,
}

impl Transcoders {
    pub(super) fn new(back: Sender<Command>, counters: Arc<MediaCounters>) -> Self {
        Transcoders {
            workers: HashMap::new(),
            back,
            counters,
        }
    }

    pub(super) fn push(&mut self, job: TranscodeJob) {
        let session = job.session;
        let transform = job.transform;
        let Some(worker) = self.worker(session, transform) else {
            return;
        };
        match worker.try_send(Job::Frame(job)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.counters.frames_dropped.fetch_add(1, Ordering::Relaxed);
                let _ = self.back.try_send(Command::NeedKeyframe(session));
            }
            Err(TrySendError::Disconnected(_)) => {
                self.workers.remove(&session);
            }
        }
    }

    pub(super) fn keyframe(&mut self, session: SessionId) {
        if let Some(w) = self.workers.get(&session) {
            let _ = w.try_send(Job::Keyframe);
        }
    }

    pub(super) fn bitrate(&mut self, session: SessionId, bps: u64) {
        if let Some(w) = self.workers.get(&session) {
            let _ = w.try_send(Job::Bitrate(bps));
        }
    }

    /// Stops the session's worker (it exits when its queue is dropped).
    pub(super) fn remove(&mut self, session: SessionId) {
        self.workers.remove(&session);
    }

    fn worker(&mut self, session: SessionId, transform: Transform) -> Option<&SyncSender<Job>> {
        if !self.workers.contains_key(&session) {
            let (tx, rx) = sync_channel(QUEUE);
            let back = self.back.clone();
            let counters = self.counters.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("transcode-{session}"))
                .spawn(move || work(session, transform, rx, back, counters));
            if let Err(e) = spawned {
                tracing::warn!(%session, error = %e, "no transcoder thread; video not transformed");
                return None;
            }
            self.workers.insert(session, tx);
        }
        self.workers.get(&session)
    }
}

fn work(
    session: SessionId,
    transform: Transform,
    jobs: Receiver<Job>,
    back: Sender<Command>,
    counters: Arc<MediaCounters>,
) {
    let mut transcoder = match Transcoder::new(transform) {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!(%session, error = %e, "cannot start the H.264 transcoder");
            return;
        }
    };
    let mut pending = Vec::with_capacity(QUEUE);
    while let Ok(job) = jobs.recv() {
        pending.push(job);
        pending.extend(jobs.try_iter());
        let newest = pending.iter().rposition(|j| matches!(j, Job::Frame(_)));
        for (i, job) in pending.drain(..).enumerate() {
            match job {
                Job::Keyframe => transcoder.request_keyframe(),
                Job::Bitrate(bps) => transcoder.set_bitrate(bps),
                Job::Frame(frame) => {
                    let emit = Some(i) == newest;
                    if !emit {
                        counters.frames_skipped.fetch_add(1, Ordering::Relaxed);
                    }
                    match transcoder.process(&frame.access_unit, frame.elapsed, emit) {
                        Ok(Some(encoded)) => {
                            counters.frames_transcoded.fetch_add(1, Ordering::Relaxed);
                            let sent = back.try_send(Command::Encoded {
                                session,
                                media_time: frame.media_time,
                                frame: encoded.data,
                            });
                            match sent {
                                Ok(()) => {}
                                // The media thread is behind: this frame is lost, so the next
                                // one the browser gets must not depend on it.
                                Err(ToLoop::Full(_)) => {
                                    counters.frames_dropped.fetch_add(1, Ordering::Relaxed);
                                    transcoder.request_keyframe();
                                }
                                Err(ToLoop::Closed(_)) => return,
                            }
                        }
                        Ok(None) => {}
                        Err(e) => {
                            tracing::debug!(%session, error = %e, "frame not transcoded");
                            let _ = back.try_send(Command::NeedKeyframe(session));
                        }
                    }
                }
            }
        }
    }
}
