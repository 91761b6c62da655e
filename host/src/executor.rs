//! The disposable thread a plugin call runs on, so a lane can walk away from a call that
//! passes its deadline.
//!
//! The executor thread is reused while its calls return in time. When one does not, the lane
//! drops its end (the call is abandoned: a running thread cannot be stopped) and the next call
//! gets a fresh thread. When the abandoned call finally returns, its thread tells the lane
//! (`LaneMsg::Released`) and exits.

use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use plugin_api::{Request, Response};

use crate::lane::LaneMsg;
use crate::loader::LoadedPlugin;

/// Stack size of an executor thread: plugins get as much as a main thread would.
const STACK_SIZE: usize = 8 << 20;

/// How a call ended.
#[derive(Debug)]
pub enum Outcome {
    /// The plugin answered.
    Answered(Response),
    /// The plugin panicked (caught in the plugin or on the host side); the message says why.
    Panicked(String),
    /// The deadline passed; the call was abandoned and is still running.
    TimedOut,
    /// No executor thread could be started.
    Unavailable(io::Error),
}

struct Call {
    plugin: Arc<LoadedPlugin>,
    request: Request,
}

type Reply = Result<Response, String>;

/// The lane's handle on its current executor thread.
struct Worker {
    calls: Sender<Call>,
    replies: Receiver<Reply>,
}

/// Runs calls for one lane, one at a time.
pub struct Executor {
    /// The current thread, started on first use; `None` after one was abandoned.
    worker: Option<Worker>,
    /// Where an abandoned thread reports that its call returned.
    lane: Sender<LaneMsg>,
    /// Threads abandoned so far whose call has not returned (the lane decrements it).
    pub abandoned: usize,
}

impl Executor {
    /// An executor for the lane whose inbox is `lane`.
    pub fn new(lane: Sender<LaneMsg>) -> Executor {
        Executor {
            worker: None,
            lane,
            abandoned: 0,
        }
    }

    /// Runs `plugin` on `request`, waiting at most `deadline`.
    pub fn call(
        &mut self,
        plugin: &Arc<LoadedPlugin>,
        request: Request,
        deadline: Duration,
    ) -> Outcome {
        let mut call = Call {
            plugin: Arc::clone(plugin),
            request,
        };
        // A thread that died (it cannot, short of a host bug) is replaced once.
        for _ in 0..2 {
            let worker = match self.worker.take() {
                Some(worker) => worker,
                None => match spawn(self.lane.clone()) {
                    Ok(worker) => worker,
                    Err(e) => return Outcome::Unavailable(e),
                },
            };
            match worker.calls.send(call) {
                Ok(()) => return self.wait(worker, deadline),
                Err(mpsc::SendError(returned)) => call = returned,
            }
        }
        Outcome::Panicked("the executor thread died twice in a row".to_owned())
    }

    fn wait(&mut self, worker: Worker, deadline: Duration) -> Outcome {
        match worker.replies.recv_timeout(deadline) {
            Ok(reply) => {
                self.worker = Some(worker);
                match reply {
                    Ok(response) => Outcome::Answered(response),
                    Err(why) => Outcome::Panicked(why),
                }
            }
            Err(RecvTimeoutError::Timeout) => {
                // Dropping `worker` abandons the thread; it reports back when the call returns.
                self.abandoned += 1;
                Outcome::TimedOut
            }
            Err(RecvTimeoutError::Disconnected) => {
                Outcome::Panicked("the executor thread died during the call".to_owned())
            }
        }
    }
}

fn spawn(lane: Sender<LaneMsg>) -> io::Result<Worker> {
    let (calls, inbox) = mpsc::channel::<Call>();
    let (outbox, replies) = mpsc::channel::<Reply>();
    thread::Builder::new()
        .name("executor".to_owned())
        .stack_size(STACK_SIZE)
        .spawn(move || serve(inbox, outbox, lane))?;
    Ok(Worker { calls, replies })
}

fn serve(inbox: Receiver<Call>, outbox: Sender<Reply>, lane: Sender<LaneMsg>) {
    while let Ok(Call { plugin, request }) = inbox.recv() {
        let reply = catch_unwind(AssertUnwindSafe(|| plugin.call(request)))
            .unwrap_or_else(|_| Err("the host side of the call panicked".to_owned()));
        if let Err(mpsc::SendError(reply)) = outbox.send(reply) {
            // The lane gave up on this call: drop what it returned here, then say so and stop.
            drop(reply);
            let generation = plugin.generation;
            drop(plugin);
            let _ = lane.send(LaneMsg::Released(generation));
            return;
        }
    }
}
