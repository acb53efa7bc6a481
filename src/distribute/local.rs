//! Ranks as threads of one process, over channels: for tests, and to try
//! [`DataParallel`](super::DataParallel) without MPI.

use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::sync::Mutex;
use std::time::Duration;

use super::Communicator;
use crate::error::{Error, Result};

/// One rank of a [`local_group`]: move each into its own thread.
#[derive(Debug)]
pub struct LocalCommunicator {
    rank: usize,
    /// `to[p]` sends to rank `p`.
    to: Vec<Sender<Vec<f32>>>,
    /// `from[p]` receives from rank `p` (a mutex only to make the
    /// communicator `Sync`; one thread uses it).
    from: Vec<Mutex<Receiver<Vec<f32>>>>,
}

/// `n` connected ranks, to be used from `n` threads (each runs its own
/// `fit`). Dropping a rank (its thread ends) makes the others' next exchange
/// with it fail at once.
///
/// ```
/// use horn::distribute::{local_group, Communicator};
/// use std::time::Duration;
/// let mut g = local_group(2);
/// let (b, a) = (g.pop().unwrap(), g.pop().unwrap());
/// let t = std::thread::spawn(move || {
///     let mut got = [0.0f32; 2];
///     b.exchange(0, &[3.0, 4.0], &mut got, Duration::from_secs(5)).map(|_| got)
/// });
/// let mut got = [0.0f32; 2];
/// a.exchange(1, &[1.0, 2.0], &mut got, Duration::from_secs(5))?;
/// assert_eq!(got, [3.0, 4.0]);
/// assert_eq!(t.join().unwrap()?, [1.0, 2.0]);
/// # Ok::<(), horn::Error>(())
/// ```
pub fn local_group(n: usize) -> Vec<LocalCommunicator> {
    // channels[i][j]: from rank i to rank j.
    let mut senders: Vec<Vec<Option<Sender<Vec<f32>>>>> = vec![Vec::new(); n];
    let mut receivers: Vec<Vec<Option<Receiver<Vec<f32>>>>> = (0..n).map(|_| Vec::new()).collect();
    for s in senders.iter_mut() {
        for r in receivers.iter_mut() {
            let (tx, rx) = channel();
            s.push(Some(tx));
            r.push(Some(rx));
        }
    }
    senders
        .into_iter()
        .zip(receivers)
        .enumerate()
        .map(|(rank, (to, from))| LocalCommunicator {
            rank,
            to: to.into_iter().flatten().collect(),
            from: from.into_iter().flatten().map(Mutex::new).collect(),
        })
        .collect()
}

impl Communicator for LocalCommunicator {
    fn rank(&self) -> usize {
        self.rank
    }

    fn size(&self) -> usize {
        self.to.len()
    }

    fn shares_thread_pool(&self) -> bool {
        true
    }

    fn exchange(
        &self,
        peer: usize,
        send: &[f32],
        recv: &mut [f32],
        timeout: Duration,
    ) -> Result<()> {
        let (Some(to), Some(from)) = (self.to.get(peer), self.from.get(peer)) else {
            return Err(Error::Distributed(format!(
                "rank {peer} does not exist (group of {})",
                self.size()
            )));
        };
        let gone = || {
            Error::Distributed(format!(
                "rank {peer} has left the group (its thread ended), seen by rank {}",
                self.rank
            ))
        };
        to.send(send.to_vec()).map_err(|_| gone())?;
        let rx = from.lock().map_err(|_| gone())?;
        let got = match rx.recv_timeout(timeout) {
            Ok(v) => v,
            Err(RecvTimeoutError::Disconnected) => return Err(gone()),
            Err(RecvTimeoutError::Timeout) => {
                return Err(Error::Distributed(format!(
                    "rank {peer} did not answer rank {} within {timeout:?}",
                    self.rank
                )))
            }
        };
        if got.len() != recv.len() {
            return Err(Error::Distributed(format!(
                "rank {peer} sent {} values where rank {} expected {}: the ranks run different \
                 models or options",
                got.len(),
                self.rank,
                recv.len()
            )));
        }
        recv.copy_from_slice(&got);
        Ok(())
    }
}
