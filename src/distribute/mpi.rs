//! MPI as the transport (feature `mpi`: the `mpi` crate, rsmpi, over the
//! system's Open MPI or MPICH).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mpi::environment::Universe;
use mpi::point_to_point::{Destination, Source};
use mpi::topology::{Communicator as _, SimpleCommunicator};
use mpi::Threading;

use super::{Communicator, DataParallel};
use crate::error::{Error, Result};

/// The largest message sent in one piece (MPI counts are C `int`s).
const PIECE: usize = 1 << 28;

/// Spins on a pending transfer this many times before yielding the core.
const SPINS: u32 = 2_000;

/// MPI, initialized for this process: keep it alive for as long as MPI is
/// used (`MPI_Finalize` runs when it and every [`DataParallel`] made from
/// it are dropped).
///
/// ```no_run
/// use horn::distribute::Mpi;
/// use horn::prelude::*;
/// # fn main() -> horn::Result<()> {
/// let mpi = Mpi::init()?;
/// let options = FitOptions {
///     epochs: 3,
///     batch_size: 128,
///     verbose: if mpi.rank() == 0 { 1 } else { 0 },
///     distribution: Some(mpi.data_parallel()?),
///     ..Default::default()
/// };
/// # let _ = options;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Mpi {
    shared: Arc<Shared>,
}

struct Shared {
    universe: Universe,
    /// Serializes this process's MPI calls (MPI is initialized for
    /// serialized use from any thread).
    lock: Mutex<()>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Mpi")
    }
}

impl Mpi {
    /// Initializes MPI (`MPI_Init_thread`). Fails if MPI was initialized
    /// before in this process.
    pub fn init() -> Result<Mpi> {
        let (universe, _level) =
            mpi::initialize_with_threading(Threading::Serialized).ok_or_else(|| {
                Error::Distributed("MPI is already initialized in this process".into())
            })?;
        Ok(Mpi {
            shared: Arc::new(Shared {
                universe,
                lock: Mutex::new(()),
            }),
        })
    }

    fn world(&self) -> SimpleCommunicator {
        self.shared.universe.world()
    }

    /// This process's rank in `MPI_COMM_WORLD`.
    pub fn rank(&self) -> usize {
        self.world().rank().max(0) as usize
    }

    /// The number of processes in `MPI_COMM_WORLD`.
    pub fn size(&self) -> usize {
        self.world().size().max(0) as usize
    }

    /// The world communicator as a horn [`Communicator`].
    pub fn communicator(&self) -> MpiCommunicator {
        MpiCommunicator {
            mpi: self.clone(),
            rank: self.rank(),
            size: self.size(),
        }
    }

    /// [`DataParallel`] over all processes of the job.
    pub fn data_parallel(&self) -> Result<DataParallel> {
        DataParallel::new(self.communicator())
    }
}

/// `MPI_COMM_WORLD` as a [`Communicator`]: non-blocking point-to-point
/// transfers, polled until done or until the timeout, which aborts the job.
#[derive(Debug, Clone)]
pub struct MpiCommunicator {
    mpi: Mpi,
    rank: usize,
    size: usize,
}

impl Communicator for MpiCommunicator {
    fn rank(&self) -> usize {
        self.rank
    }

    fn size(&self) -> usize {
        self.size
    }

    fn exchange(
        &self,
        peer: usize,
        send: &[f32],
        recv: &mut [f32],
        timeout: Duration,
    ) -> Result<()> {
        if peer >= self.size {
            return Err(Error::Distributed(format!(
                "exchange with rank {peer}, which is not in a group of {}",
                self.size
            )));
        }
        let _serial = self
            .mpi
            .shared
            .lock
            .lock()
            .map_err(|_| Error::Distributed("an MPI call panicked on another thread".into()))?;
        let world = self.mpi.world();
        let other = world.process_at_rank(peer as i32);
        let deadline = Instant::now() + timeout;
        // The same pieces on both sides: the peer receives what this rank sends.
        let pieces = send.len().max(recv.len()).div_ceil(PIECE).max(1);
        let (mut send, mut recv) = (send, recv);
        for _ in 0..pieces {
            let (s, s_rest) = send.split_at(send.len().min(PIECE));
            let r_len = recv.len().min(PIECE);
            let (r, r_rest) = std::mem::take(&mut recv).split_at_mut(r_len);
            (send, recv) = (s_rest, r_rest);
            mpi::request::scope(|scope| {
                let mut sending = Some(other.immediate_send(scope, s));
                let mut receiving = Some(other.immediate_receive_into(scope, r));
                let mut spins = 0u32;
                loop {
                    if let Some(q) = sending.take() {
                        sending = q.test().err();
                    }
                    if let Some(q) = receiving.take() {
                        receiving = q.test().err();
                    }
                    if sending.is_none() && receiving.is_none() {
                        break;
                    }
                    spins += 1;
                    if spins >= SPINS {
                        if Instant::now() > deadline {
                            // A transfer in flight cannot be abandoned (MPI
                            // may still write into `r`), so the job ends here.
                            // One write, so that mpirun's own abort notice
                            // cannot land inside the line.
                            let line = format!(
                                "horn: data-parallel training: rank {peer} did not answer rank {} \
                                 within {timeout:?} (DataParallel::timeout); aborting the MPI job\n",
                                self.rank
                            );
                            let _ =
                                std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes());
                            world.abort(70);
                        }
                        std::thread::yield_now();
                    }
                }
            });
        }
        Ok(())
    }
}
