//! The build without the `distribute` feature: `fit` keeps its calls into
//! the data-parallel engine, but no run can exist (`ParallelRun` has no
//! value), so they compile to nothing and the default build does not grow.

use ndarray::ArrayView2;

use super::fit::{FitOptions, ParallelData, StepContext};
use super::history::Logs;
use super::workspace::Workspace;
use super::{Compiled, Sequential};
use crate::error::Result;
use crate::metrics::MetricState;

/// A data-parallel run: none without the `distribute` feature.
pub(crate) enum ParallelRun {}

impl ParallelRun {
    pub fn shares_thread_pool(&self) -> bool {
        match *self {}
    }
}

pub(crate) fn workspace_rows(_o: &FitOptions, bs: usize) -> Result<usize> {
    Ok(bs)
}

/// Nothing to restore: every callback sees rank 0.
pub(crate) struct RankGuard;

pub(crate) fn rank_guard(_o: &FitOptions) -> RankGuard {
    RankGuard
}

pub(crate) fn verbose(o: &FitOptions) -> u8 {
    o.verbose
}

impl Sequential {
    pub(super) fn parallel_start(
        &self,
        _o: &FitOptions,
        _ws: &Workspace,
        _d: ParallelData<'_>,
    ) -> Result<Option<ParallelRun>> {
        Ok(None)
    }

    pub(super) fn parallel_train_step(
        &mut self,
        _ws: &mut Workspace,
        _states: &mut [MetricState],
        _weighted: &[bool],
        _c: &StepContext<'_>,
        run: &mut ParallelRun,
    ) -> Result<f32> {
        match *run {}
    }

    pub(super) fn parallel_sync_optimizer(&mut self, run: &mut ParallelRun) -> Result<()> {
        match *run {}
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn parallel_validate(
        &self,
        _c: &Compiled,
        _x: ArrayView2<f32>,
        _y: ArrayView2<f32>,
        _weights: Option<&[f32]>,
        _batch_size: usize,
        run: &ParallelRun,
    ) -> Result<Logs> {
        match *run {}
    }

    pub(super) fn parallel_verify(&self, run: &ParallelRun, _epoch: usize) -> Result<()> {
        match *run {}
    }
}
