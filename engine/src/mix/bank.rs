//! The layers that play a block steadily, run side by side.
//!
//! A layer plays a block steadily when one voice plays it from start to end with nothing
//! waiting, fading or gliding: its filter's coefficients, its gain and its balance are then
//! the same for every frame. Those layers' frames are laid out as lanes (two to a layer,
//! left and right) and their filters run over all lanes at once, a frame at a time, so the
//! recursions of many layers share each vector step instead of waiting on one another.
//! The arithmetic per lane is [`Svf::process`](crate::dsp::Svf::process)'s and the layer's
//! gain and balance, in the same order: the same values, bit for bit, as a layer playing
//! the block a frame at a time.
//!
//! When every playing layer is steady and none wraps inside the block (nearly every
//! period), the bank reads the layers' frames where they lie and adds each result straight
//! into the group sums and the effect sends ([`Bank::run_into`]). Otherwise the steady
//! layers' frames are copied into lanes, run, and added in slot order among the layers
//! that play frame by frame ([`Bank::run`], [`Bank::mix_into`]). Either way every sum takes
//! its layers in slot order, as frame-by-frame rendering adds them.

use super::{GROUPS, MAX_LAYERS};
use crate::dsp::{FilterMode, SVF_EPSILON, SvfSteady};

/// Lanes in one vector step.
const WIDTH: usize = 8;
/// Lanes for every slot's two channels.
const LANES: usize = 2 * MAX_LAYERS;

/// One vector step's lanes: filter coefficients and state, output choice, gain and balance.
#[derive(Clone, Copy, Default)]
struct Lanes {
    a1: [f32; WIDTH],
    a2: [f32; WIDTH],
    a3: [f32; WIDTH],
    k: [f32; WIDTH],
    ic1: [f32; WIDTH],
    ic2: [f32; WIDTH],
    /// Bit masks choosing each lane's output: low-pass, band-pass, high-pass or the input.
    low: [u32; WIDTH],
    band: [u32; WIDTH],
    high: [u32; WIDTH],
    off: [u32; WIDTH],
    gain: [f32; WIDTH],
    balance: [f32; WIDTH],
}

impl Lanes {
    /// Filters one frame of every lane and applies gain and balance.
    #[inline(always)]
    fn step(&mut self, x: [f32; WIDTH]) -> [f32; WIDTH] {
        let mut y = [0.0; WIDTH];
        for l in 0..WIDTH {
            let v0 = x[l];
            let v3 = v0 - self.ic2[l];
            let v1 = self.a1[l] * self.ic1[l] + self.a2[l] * v3;
            let v2 = self.ic2[l] + self.a2[l] * self.ic1[l] + self.a3[l] * v3;
            self.ic1[l] = 2.0 * v1 - self.ic1[l] + SVF_EPSILON;
            self.ic2[l] = 2.0 * v2 - self.ic2[l] + SVF_EPSILON;
            let high = v0 - self.k[l] * v1 - v2;
            let chosen = (v2.to_bits() & self.low[l])
                | (v1.to_bits() & self.band[l])
                | (high.to_bits() & self.high[l])
                | (v0.to_bits() & self.off[l]);
            y[l] = f32::from_bits(chosen) * self.gain[l] * self.balance[l];
        }
        y
    }

    /// Lane `l` as a silent, unfiltered lane: what lanes past the last member run.
    fn idle(&mut self, l: usize) {
        let off = SvfSteady {
            mode: FilterMode::Off,
            a: [0.0; 3],
            k: 2.0,
            ic1: [0.0; 2],
            ic2: [0.0; 2],
        };
        self.set(l, &off, 0, 0.0, 0.0);
    }

    /// Lane `l` as channel `ch` of a layer with `filter`, `gain` and `balance`. An
    /// unfiltered layer's lanes run from silence and are never read back.
    fn set(&mut self, l: usize, filter: &SvfSteady, ch: usize, gain: f32, balance: f32) {
        let mode = filter.mode;
        let on = |m: FilterMode| if mode == m { u32::MAX } else { 0 };
        let filtered = mode != FilterMode::Off;
        self.a1[l] = filter.a[0];
        self.a2[l] = filter.a[1];
        self.a3[l] = filter.a[2];
        self.k[l] = filter.k;
        self.ic1[l] = if filtered { filter.ic1[ch] } else { 0.0 };
        self.ic2[l] = if filtered { filter.ic2[ch] } else { 0.0 };
        self.low[l] = on(FilterMode::LowPass);
        self.band[l] = on(FilterMode::BandPass);
        self.high[l] = on(FilterMode::HighPass);
        self.off[l] = on(FilterMode::Off);
        self.gain[l] = gain;
        self.balance[l] = balance;
    }
}

/// How a layer plays a block it plays steadily.
#[derive(Clone, Copy)]
pub(super) struct Steady {
    pub filter: SvfSteady,
    /// Gain times gate.
    pub gain: f32,
    /// Left and right gains of the pan.
    pub balance: [f32; 2],
    /// Reverb and delay send levels.
    pub sends: [f32; 2],
    pub group: usize,
}

/// The steady layers of one block.
pub(super) struct Bank {
    lanes: [Lanes; LANES / WIDTH],
    /// Each member's slot, filter mode, sends and group, in slot order.
    slots: [usize; MAX_LAYERS],
    modes: [FilterMode; MAX_LAYERS],
    sends: [[f32; 2]; MAX_LAYERS],
    groups: [usize; MAX_LAYERS],
    /// Each slot's member index, if it is one.
    member_of: [Option<usize>; MAX_LAYERS],
    members: usize,
    /// The block's frames in lanes, frame `i` from `i * stride`: at most a period long.
    frames: Vec<f32>,
    stride: usize,
    /// What each lane plays in the block, lane after lane, `max_block` apart.
    played: Vec<f32>,
    max_block: usize,
    n: usize,
}

impl Bank {
    /// A bank for blocks of up to `max_block` frames.
    pub(super) fn new(max_block: usize) -> Self {
        Self {
            lanes: [Lanes::default(); LANES / WIDTH],
            slots: [0; MAX_LAYERS],
            modes: [FilterMode::Off; MAX_LAYERS],
            sends: [[0.0; 2]; MAX_LAYERS],
            groups: [0; MAX_LAYERS],
            member_of: [None; MAX_LAYERS],
            members: 0,
            frames: vec![0.0; max_block * LANES],
            stride: 0,
            played: vec![0.0; max_block * LANES],
            max_block,
            n: 0,
        }
    }

    /// Empties the bank for a block of `n` frames.
    pub(super) fn clear(&mut self, n: usize) {
        self.member_of = [None; MAX_LAYERS];
        self.members = 0;
        self.n = n.min(self.frames.len() / LANES);
    }

    /// Takes the layer in `slot` into the bank; layers join in slot order.
    pub(super) fn join(&mut self, slot: usize, steady: Steady) {
        let member = self.members;
        if member >= MAX_LAYERS || slot >= MAX_LAYERS {
            return;
        }
        let f = steady.filter;
        for ch in 0..2 {
            let lane = 2 * member + ch;
            if let Some(lanes) = self.lanes.get_mut(lane / WIDTH) {
                lanes.set(lane % WIDTH, &f, ch, steady.gain, steady.balance[ch]);
            }
        }
        self.slots[member] = slot;
        self.modes[member] = f.mode;
        self.sends[member] = steady.sends;
        self.groups[member] = steady.group;
        self.member_of[slot] = Some(member);
        self.members += 1;
    }

    /// The members' slots in slot order, with the first lane of each.
    pub(super) fn members(&self) -> impl Iterator<Item = (usize, usize)> + use<> {
        let slots = self.slots;
        (0..self.members).map(move |m| (slots[m], 2 * m))
    }

    /// The lanes of the block's frames once every member has joined: `(frames, stride)`,
    /// frame `i`'s lanes from `i * stride`, for the members to copy their frames into.
    pub(super) fn lanes_mut(&mut self) -> (&mut [f32], usize) {
        self.close();
        let end = self.n * self.stride;
        (&mut self.frames[..end], self.stride)
    }

    /// Ends the joining: the lanes past the last member's are made silent.
    fn close(&mut self) {
        let used = 2 * self.members;
        self.stride = used.div_ceil(WIDTH) * WIDTH;
        for lane in used..self.stride {
            if let Some(lanes) = self.lanes.get_mut(lane / WIDTH) {
                lanes.idle(lane % WIDTH);
            }
        }
    }

    /// Runs the block straight from the members' frames (`sources`, each member's block,
    /// in member order) into the group sums and the effect sends, each member added in
    /// member order as [`Bank::mix_into`] adds them: the same values, with no copy of the
    /// frames in lanes and no columns to read back. Every member must be the whole of what
    /// plays into the sums this block (no layer outside the bank adds to them).
    ///
    /// It runs eight frames at a time with AVX, and a frame at a time on other CPUs and
    /// for the frames past the last whole eight. Returns false, having done nothing, where
    /// a member's block wraps (a source shorter than the block): the caller then copies
    /// the frames in ([`Bank::lanes_mut`]) and runs [`Bank::run`].
    ///
    /// Runs on the JACK thread: no allocation, locks, system calls or logging.
    pub(super) fn run_into(
        &mut self,
        sources: &[&[[f32; 2]]],
        groups: &mut [[Vec<f32>; 2]; GROUPS],
        sends: &mut [[Vec<f32>; 2]; 2],
    ) -> bool {
        let n = self.n;
        let whole = sources.len() == self.members && sources.iter().all(|s| s.len() >= n);
        let room = groups
            .iter()
            .chain(sends.iter())
            .flatten()
            .all(|b| b.len() >= n);
        if n == 0 || !whole || !room {
            return false;
        }
        self.close();
        let steps = self.stride / WIDTH;
        let lanes = &mut self.lanes[..steps];
        let members = Members {
            sources,
            groups: &self.groups[..self.members],
            sends: &self.sends[..self.members],
        };
        let mut done = 0;
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx") {
            let targets = Targets::of(groups, sends);
            done = n / 8 * 8;
            // SAFETY: the CPU has just been seen to support AVX; every source holds at
            // least `n` frames and every target at least `n` samples (checked above).
            unsafe { run_into_avx(lanes, &members, &targets, done) };
        }
        run_into_frames(lanes, &members, groups, sends, done..n);
        true
    }

    /// Filters every lane and applies gains and balances, frame by frame.
    ///
    /// Runs on the JACK thread: no allocation, locks, system calls or logging.
    pub(super) fn run(&mut self) {
        crate::analysis::widened! {
            fn widest(lanes: &mut [Lanes], frames: &[f32], stride: usize, played: &mut [f32], max_block: usize) = run_lanes
        }
        let steps = self.stride / WIDTH;
        let end = self.n * self.stride;
        widest(
            &mut self.lanes[..steps],
            &self.frames[..end],
            self.stride,
            &mut self.played,
            self.max_block,
        );
    }

    /// The member in `slot`, if the layer there plays this block steadily.
    pub(super) fn member(&self, slot: usize) -> Option<usize> {
        self.member_of.get(slot).copied().flatten()
    }

    /// Adds `member`'s block into its group and the two effect sends.
    ///
    /// Runs on the JACK thread: no allocation, locks, system calls or logging.
    pub(super) fn mix_into(
        &self,
        member: usize,
        groups: &mut [[Vec<f32>; 2]; GROUPS],
        [reverb_l, reverb_r]: &mut [Vec<f32>; 2],
        [delay_l, delay_r]: &mut [Vec<f32>; 2],
    ) {
        let Some([out_l, out_r]) = groups.get_mut(self.groups[member]) else {
            return;
        };
        let [rv, dl] = self.sends[member];
        let column = |ch: usize| {
            let start = (2 * member + ch) * self.max_block;
            self.played.get(start..start + self.n).unwrap_or(&[])
        };
        for (((l, ol), rl), dl_) in column(0)
            .iter()
            .zip(out_l.iter_mut())
            .zip(reverb_l.iter_mut())
            .zip(delay_l.iter_mut())
        {
            *ol += l;
            *rl += l * rv;
            *dl_ += l * dl;
        }
        for (((r, or), rr), dr) in column(1)
            .iter()
            .zip(out_r.iter_mut())
            .zip(reverb_r.iter_mut())
            .zip(delay_r.iter_mut())
        {
            *or += r;
            *rr += r * rv;
            *dr += r * dl;
        }
    }

    /// The filter state `member` ran to, left and right; `None` for an unfiltered layer,
    /// whose state did not move.
    pub(super) fn state(&self, member: usize) -> Option<([f32; 2], [f32; 2])> {
        if self.modes[member] == FilterMode::Off {
            return None;
        }
        let lane = |ch: usize| {
            let at = 2 * member + ch;
            let lanes = &self.lanes[at / WIDTH];
            (lanes.ic1[at % WIDTH], lanes.ic2[at % WIDTH])
        };
        let ((l1, l2), (r1, r2)) = (lane(0), lane(1));
        Some(([l1, r1], [l2, r2]))
    }
}

/// Filters every lane of `frames` (frame `i`'s lanes from `i * stride`) and writes each
/// lane's results to its column of `played` (lane `l`'s frame `i` at `l * max_block + i`).
#[inline(always)]
fn run_lanes(
    lanes: &mut [Lanes],
    frames: &[f32],
    stride: usize,
    played: &mut [f32],
    max_block: usize,
) {
    if stride == 0 {
        return;
    }
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx") {
        // SAFETY: the CPU has just been seen to support AVX.
        done = unsafe { run_lanes_avx(lanes, frames, stride, played, max_block) };
    }
    let rows = frames.chunks_exact(stride).enumerate().skip(done);
    for (i, row) in rows {
        for (step, (lanes, x)) in lanes.iter_mut().zip(row.as_chunks::<WIDTH>().0).enumerate() {
            for (l, y) in lanes.step(*x).into_iter().enumerate() {
                if let Some(slot) = played.get_mut((step * WIDTH + l) * max_block + i) {
                    *slot = y;
                }
            }
        }
    }
}

/// Steps of lanes run together, their states in registers: one step's recursion waits on
/// its latency while the others' go ahead.
#[cfg(target_arch = "x86_64")]
const GANG: usize = 4;

/// [`run_lanes`] eight frames at a time: up to [`GANG`] steps together, a frame at a time,
/// then each step's eight frames turned into its eight lanes' columns. The operations are
/// [`Lanes::step`]'s in the same order, so the values are the same. Returns how many frames
/// it did (whole eights).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
fn run_lanes_avx(
    lanes: &mut [Lanes],
    frames: &[f32],
    stride: usize,
    played: &mut [f32],
    max_block: usize,
) -> usize {
    let n = frames.len() / stride;
    let whole = n / 8 * 8;
    // Every step's lanes lie within a row, and every lane's column holds the block.
    if lanes.len() * WIDTH > stride || whole > max_block || played.len() < LANES * max_block {
        return 0;
    }
    for (gang, lanes) in lanes.chunks_mut(GANG).enumerate() {
        let first = gang * GANG;
        match lanes.len() {
            4 => run_gang_avx::<4>(lanes, first, frames, stride, played, max_block, whole),
            3 => run_gang_avx::<3>(lanes, first, frames, stride, played, max_block, whole),
            2 => run_gang_avx::<2>(lanes, first, frames, stride, played, max_block, whole),
            _ => run_gang_avx::<1>(lanes, first, frames, stride, played, max_block, whole),
        }
    }
    whole
}

/// `S` steps of lanes from step `first`, over the first `whole` frames.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
fn run_gang_avx<const S: usize>(
    lanes: &mut [Lanes],
    first: usize,
    frames: &[f32],
    stride: usize,
    played: &mut [f32],
    max_block: usize,
    whole: usize,
) {
    use std::arch::x86_64::*;
    if lanes.len() < S || (first + S) * WIDTH > stride || played.len() < LANES * max_block {
        return;
    }
    // SAFETY (every load and store below): each pointer is to eight floats inside a field
    // of `lanes`, inside a row of `frames` (the check above: the gang's steps lie within a
    // row, and rows are whole below `whole`), or inside a column of `played` (its frames
    // `i..i + 8` lie below `whole`, at most `max_block`).
    let mut ic1: [__m256; S] = std::array::from_fn(|s| load8(&lanes[s].ic1));
    let mut ic2: [__m256; S] = std::array::from_fn(|s| load8(&lanes[s].ic2));
    for i in (0..whole.min(max_block)).step_by(8) {
        let mut ys = [[_mm256_setzero_ps(); 8]; S];
        for (f, row) in frames[i * stride..(i + 8) * stride]
            .chunks_exact(stride)
            .enumerate()
        {
            for s in 0..S {
                let v0 = unsafe { _mm256_loadu_ps(row.as_ptr().add((first + s) * WIDTH)) };
                ys[s][f] = step_avx(&lanes[s], &mut ic1[s], &mut ic2[s], v0);
            }
        }
        for (s, ys) in ys.iter().enumerate() {
            for (l, column) in crate::dsp::transpose8(*ys).iter().enumerate() {
                let at = ((first + s) * WIDTH + l) * max_block + i;
                unsafe { _mm256_storeu_ps(played.as_mut_ptr().add(at), *column) };
            }
        }
    }
    for (s, lanes) in lanes.iter_mut().take(S).enumerate() {
        unsafe {
            _mm256_storeu_ps(lanes.ic1.as_mut_ptr(), ic1[s]);
            _mm256_storeu_ps(lanes.ic2.as_mut_ptr(), ic2[s]);
        }
    }
}

/// [`Bank::run_into`] a frame at a time over the frames `range`: each step's lanes
/// through [`Lanes::step`], each member's results then added in member order.
fn run_into_frames(
    lanes: &mut [Lanes],
    members: &Members<'_>,
    groups: &mut [[Vec<f32>; 2]; GROUPS],
    [reverb, delay]: &mut [[Vec<f32>; 2]; 2],
    range: std::ops::Range<usize>,
) {
    const PER_STEP: usize = WIDTH / 2;
    for i in range {
        for (step, lanes) in lanes.iter_mut().enumerate() {
            let member = |k: usize| step * PER_STEP + k;
            let mut x = [0.0f32; WIDTH];
            for (k, pair) in x.chunks_exact_mut(2).enumerate() {
                if let Some(frame) = members.sources.get(member(k)).and_then(|s| s.get(i)) {
                    pair.copy_from_slice(frame);
                }
            }
            let y = lanes.step(x);
            for (k, pair) in y.chunks_exact(2).enumerate() {
                let m = member(k);
                let (Some(&group), Some(&[rv, dl])) = (members.groups.get(m), members.sends.get(m))
                else {
                    break;
                };
                let Some(outs) = groups.get_mut(group) else {
                    continue;
                };
                for (ch, &x) in pair.iter().enumerate() {
                    let sums = [&mut outs[ch], &mut reverb[ch], &mut delay[ch]];
                    for (sum, level) in sums.into_iter().zip([None, Some(rv), Some(dl)]) {
                        if let Some(s) = sum.get_mut(i) {
                            *s += level.map_or(x, |level| x * level);
                        }
                    }
                }
            }
        }
    }
}

/// Eight floats from a field of [`Lanes`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
#[inline]
fn load8(v: &[f32; WIDTH]) -> std::arch::x86_64::__m256 {
    // SAFETY: the pointer is to eight floats.
    unsafe { std::arch::x86_64::_mm256_loadu_ps(v.as_ptr()) }
}

/// [`Lanes::step`] on eight lanes in one vector: the same operations in the same order.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
#[inline]
fn step_avx(
    c: &Lanes,
    ic1: &mut std::arch::x86_64::__m256,
    ic2: &mut std::arch::x86_64::__m256,
    v0: std::arch::x86_64::__m256,
) -> std::arch::x86_64::__m256 {
    use std::arch::x86_64::*;
    // SAFETY: the pointer is to eight 32-bit masks.
    let mask =
        |v: &[u32; WIDTH]| unsafe { _mm256_castsi256_ps(_mm256_loadu_si256(v.as_ptr().cast())) };
    let (two, epsilon) = (_mm256_set1_ps(2.0), _mm256_set1_ps(SVF_EPSILON));
    let (a1, a2, a3) = (load8(&c.a1), load8(&c.a2), load8(&c.a3));
    let v3 = _mm256_sub_ps(v0, *ic2);
    let v1 = _mm256_add_ps(_mm256_mul_ps(a1, *ic1), _mm256_mul_ps(a2, v3));
    let v2 = _mm256_add_ps(
        _mm256_add_ps(*ic2, _mm256_mul_ps(a2, *ic1)),
        _mm256_mul_ps(a3, v3),
    );
    *ic1 = _mm256_add_ps(_mm256_sub_ps(_mm256_mul_ps(two, v1), *ic1), epsilon);
    *ic2 = _mm256_add_ps(_mm256_sub_ps(_mm256_mul_ps(two, v2), *ic2), epsilon);
    let high = _mm256_sub_ps(_mm256_sub_ps(v0, _mm256_mul_ps(load8(&c.k), v1)), v2);
    let chosen = _mm256_or_ps(
        _mm256_or_ps(
            _mm256_and_ps(v2, mask(&c.low)),
            _mm256_and_ps(v1, mask(&c.band)),
        ),
        _mm256_or_ps(
            _mm256_and_ps(high, mask(&c.high)),
            _mm256_and_ps(v0, mask(&c.off)),
        ),
    );
    _mm256_mul_ps(_mm256_mul_ps(chosen, load8(&c.gain)), load8(&c.balance))
}

/// What the members of a block play: each one's frames, group and send levels.
struct Members<'a> {
    sources: &'a [&'a [[f32; 2]]],
    groups: &'a [usize],
    sends: &'a [[f32; 2]],
}

/// Where the members add up: each group's left and right sums, then the reverb's and
/// the delay's sends, as pointers to at least a block of samples each.
#[cfg(target_arch = "x86_64")]
struct Targets {
    groups: [[*mut f32; 2]; GROUPS],
    sends: [[*mut f32; 2]; 2],
}

#[cfg(target_arch = "x86_64")]
impl Targets {
    fn of(groups: &mut [[Vec<f32>; 2]; GROUPS], sends: &mut [[Vec<f32>; 2]; 2]) -> Self {
        let pair = |[l, r]: &mut [Vec<f32>; 2]| [l.as_mut_ptr(), r.as_mut_ptr()];
        Self {
            groups: groups.each_mut().map(pair),
            sends: sends.each_mut().map(pair),
        }
    }
}

/// [`Bank::run_into`]'s body: eight frames at a time, up to [`GANG`] steps of lanes
/// together (each step four members), each member's eight results then added into its
/// group and sends, members in order.
///
/// # Safety
/// The CPU supports AVX; every source holds at least `n` frames; every target points to
/// at least `n` samples; `n` is a multiple of eight.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
unsafe fn run_into_avx(lanes: &mut [Lanes], members: &Members<'_>, targets: &Targets, n: usize) {
    for i in (0..n).step_by(8) {
        for (gang, lanes) in lanes.chunks_mut(GANG).enumerate() {
            let first = gang * GANG;
            // SAFETY: passed on from the caller, with `i + 8 <= n`.
            unsafe {
                match lanes.len() {
                    4 => tile_avx::<4>(lanes, first, members, targets, i),
                    3 => tile_avx::<3>(lanes, first, members, targets, i),
                    2 => tile_avx::<2>(lanes, first, members, targets, i),
                    _ => tile_avx::<1>(lanes, first, members, targets, i),
                }
            }
        }
    }
}

/// Frames `i..i + 8` of `S` steps of lanes from step `first`.
///
/// # Safety
/// As [`run_into_avx`], with `i + 8` at most its `n`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
unsafe fn tile_avx<const S: usize>(
    lanes: &mut [Lanes],
    first: usize,
    members: &Members<'_>,
    targets: &Targets,
    i: usize,
) {
    use std::arch::x86_64::*;
    const PER_STEP: usize = WIDTH / 2;
    let count = members.sources.len();
    if lanes.len() < S || count == 0 {
        return;
    }
    // Each lane pair's frames; the silent lanes past the last member read the first
    // member's (their results are never added anywhere).
    let source = |m: usize| {
        members
            .sources
            .get(m)
            .unwrap_or(&members.sources[0])
            .as_ptr()
    };
    let pointers: [[*const [f32; 2]; PER_STEP]; S] =
        std::array::from_fn(|s| std::array::from_fn(|k| source((first + s) * PER_STEP + k)));
    let mut ic1: [__m256; S] = std::array::from_fn(|s| load8(&lanes[s].ic1));
    let mut ic2: [__m256; S] = std::array::from_fn(|s| load8(&lanes[s].ic2));
    let mut ys = [[_mm256_setzero_ps(); 8]; S];
    // Frame outside, step inside: the steps' recursions interleave.
    #[allow(clippy::needless_range_loop)]
    for f in 0..8 {
        for s in 0..S {
            let [p0, p1, p2, p3] = pointers[s];
            // SAFETY: frame `i + f` lies inside each source (at least `n` frames long).
            let v0 = unsafe {
                let pair = |a: *const [f32; 2], b: *const [f32; 2]| {
                    let low = _mm_load_sd(a.add(i + f).cast());
                    _mm_castpd_ps(_mm_loadh_pd(low, b.add(i + f).cast()))
                };
                _mm256_set_m128(pair(p2, p3), pair(p0, p1))
            };
            ys[s][f] = step_avx(&lanes[s], &mut ic1[s], &mut ic2[s], v0);
        }
    }
    for (s, lanes) in lanes.iter_mut().take(S).enumerate() {
        // SAFETY: each pointer is to eight floats of a field.
        unsafe {
            _mm256_storeu_ps(lanes.ic1.as_mut_ptr(), ic1[s]);
            _mm256_storeu_ps(lanes.ic2.as_mut_ptr(), ic2[s]);
        }
    }
    for (s, ys) in ys.iter().enumerate() {
        let columns = crate::dsp::transpose8(*ys);
        for k in 0..PER_STEP {
            let m = (first + s) * PER_STEP + k;
            if m >= count {
                return;
            }
            let (Some(&group), Some(&[rv, dl])) = (members.groups.get(m), members.sends.get(m))
            else {
                return;
            };
            let Some(outs) = targets.groups.get(group) else {
                continue;
            };
            let [reverb, delay] = targets.sends;
            let (rv, dl) = (_mm256_set1_ps(rv), _mm256_set1_ps(dl));
            for ch in 0..2 {
                let x = columns[2 * k + ch];
                // SAFETY: each target holds at least `n` samples, and `i + 8 <= n`.
                unsafe {
                    let add = |p: *mut f32, v: __m256| {
                        let p = p.add(i);
                        _mm256_storeu_ps(p, _mm256_add_ps(_mm256_loadu_ps(p), v));
                    };
                    add(outs[ch], x);
                    add(reverb[ch], _mm256_mul_ps(x, rv));
                    add(delay[ch], _mm256_mul_ps(x, dl));
                }
            }
        }
    }
}
