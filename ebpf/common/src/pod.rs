//! `aya::Pod` for the map types, so the user side can read and write them as raw bytes.
//!
//! Most of this crate's unsafe code (the rest is `FlowKey::words`): `Pod` is an unsafe trait
//! because aya copies values byte-wise to and from the kernel.
#![allow(unsafe_code, reason = "aya::Pod is an unsafe marker trait")]

use crate::{
    Backend, BackendCpu, BackendStats, FlowBucket, FlowClock, FlowKey, FlowValue, GenFrame, Mac,
    NatSlot, NextHop, OwnedKey, RingChunk, Settings, SynWindow, VipEntry, VipKey, VipStats,
    VipValue,
};

// SAFETY (every impl below): each type is `#[repr(C)]`, `Copy`, made only of integers and
// integer arrays with explicit padding fields, so every byte pattern is a valid value and no
// byte is uninitialised padding.
unsafe impl aya::Pod for VipKey {}
// SAFETY: see above.
unsafe impl aya::Pod for VipValue {}
// SAFETY: see above.
unsafe impl aya::Pod for VipEntry {}
// SAFETY: see above.
unsafe impl aya::Pod for RingChunk {}
// SAFETY: see above.
unsafe impl aya::Pod for Backend {}
// SAFETY: see above.
unsafe impl aya::Pod for FlowKey {}
// SAFETY: see above.
unsafe impl aya::Pod for FlowValue {}
// SAFETY: see above.
unsafe impl aya::Pod for FlowBucket {}
// SAFETY: see above.
unsafe impl aya::Pod for NatSlot {}
// SAFETY: see above.
unsafe impl aya::Pod for FlowClock {}
// SAFETY: see above.
unsafe impl aya::Pod for Settings {}
// SAFETY: see above.
unsafe impl aya::Pod for OwnedKey {}
// SAFETY: see above.
unsafe impl aya::Pod for Mac {}
// SAFETY: see above.
unsafe impl aya::Pod for VipStats {}
// SAFETY: see above.
unsafe impl aya::Pod for BackendStats {}
// SAFETY: see above.
unsafe impl aya::Pod for BackendCpu {}
// SAFETY: see above.
unsafe impl aya::Pod for SynWindow {}
// SAFETY: see above.
unsafe impl aya::Pod for GenFrame {}
// SAFETY: see above.
unsafe impl aya::Pod for NextHop {}
