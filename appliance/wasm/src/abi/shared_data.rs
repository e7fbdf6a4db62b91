//! Shared data: a key-value store shared by every instance of a plugin (and kept across
//! reloads of the same plugin name), with compare-and-swap. Shared queues are not implemented.

use std::collections::HashMap;

use parking_lot::Mutex;
use wasmtime::{Caller, Linker};

use crate::abi::{Answer, Status, answer, memory};
use crate::state::HostState;

/// Most keys and bytes one plugin may keep.
const MAX_KEYS: usize = 10_000;
const MAX_VALUE: u32 = 1 << 20;

/// One plugin's shared key-value store.
#[derive(Debug, Default)]
pub struct SharedData {
    entries: Mutex<HashMap<String, (Vec<u8>, u32)>>,
}

impl SharedData {
    /// The value and its CAS token.
    pub fn get(&self, key: &str) -> Option<(Vec<u8>, u32)> {
        self.entries.lock().get(key).cloned()
    }

    /// Stores `value` if `cas` is 0 or matches the current token; bumps the token.
    pub fn set(&self, key: &str, value: Vec<u8>, cas: u32) -> Result<(), Status> {
        let mut entries = self.entries.lock();
        let len = entries.len();
        match entries.get_mut(key) {
            Some((_, current)) if cas != 0 && cas != *current => Err(Status::CasMismatch),
            Some(entry) => {
                // Tokens never come back to 0, which means "no CAS".
                let next = entry.1.wrapping_add(1).max(1);
                *entry = (value, next);
                Ok(())
            }
            None if len >= MAX_KEYS => Err(Status::InternalFailure),
            // CAS against a key that does not exist fails as a mismatch.
            None if cas != 0 => Err(Status::CasMismatch),
            None => {
                entries.insert(key.to_owned(), (value, 1));
                Ok(())
            }
        }
    }
}

pub(crate) fn link(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.func_wrap("env", "proxy_get_shared_data", get)?;
    linker.func_wrap("env", "proxy_set_shared_data", set)?;
    Ok(())
}

fn get(
    mut caller: Caller<'_, HostState>,
    kp: u32,
    kl: u32,
    ret_ptr: u32,
    ret_len: u32,
    ret_cas: u32,
) -> Answer {
    let key = match memory::read_str(&mut caller, kp, kl) {
        Ok(k) => k,
        Err(s) => return answer(Err(s)),
    };
    let Some((value, cas)) = caller.data().plugin.shared_data.get(&key) else {
        return answer(Err(Status::NotFound));
    };
    if let Err(e) = memory::write_u32(&mut caller, ret_cas, cas) {
        return answer(Err(e.into()));
    }
    answer(memory::hand_over(&mut caller, &value, ret_ptr, ret_len)?)
}

fn set(mut caller: Caller<'_, HostState>, kp: u32, kl: u32, vp: u32, vl: u32, cas: u32) -> Answer {
    if vl > MAX_VALUE {
        return answer(Err(Status::BadArgument));
    }
    let read = memory::read_str(&mut caller, kp, kl)
        .and_then(|k| Ok((k, memory::read(&mut caller, vp, vl)?)));
    let (key, value) = match read {
        Ok(kv) => kv,
        Err(s) => return answer(Err(s)),
    };
    answer(caller.data().plugin.shared_data.set(&key, value, cas))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compare_and_swap() {
        let d = SharedData::default();
        assert_eq!(d.set("k", b"1".to_vec(), 7), Err(Status::CasMismatch));
        d.set("k", b"1".to_vec(), 0).unwrap();
        let (_, cas) = d.get("k").unwrap();
        d.set("k", b"2".to_vec(), cas).unwrap();
        assert_eq!(d.set("k", b"3".to_vec(), cas), Err(Status::CasMismatch));
        assert_eq!(d.get("k").unwrap().0, b"2");
    }
}
