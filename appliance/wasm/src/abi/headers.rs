//! HTTP header maps: get/set pairs, get/add/replace/remove one value, for request and response
//! headers and trailers. Pseudo-headers (`:path`, …) are part of the maps as the guest sees them.
//!
//! Serialised form (little-endian): `count: u32`, then `count` × (`name_len: u32`,
//! `value_len: u32`), then each name and value followed by a NUL byte.

use http::{HeaderMap, HeaderName, HeaderValue};
use wasmtime::{Caller, Linker};

use crate::abi::{Answer, Status, answer, map_type, memory};
use crate::calls::CallResponse;
use crate::state::{Head, HostState, HttpState, Interned};

pub(crate) fn link(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.func_wrap("env", "proxy_get_header_map_pairs", get_pairs)?;
    linker.func_wrap("env", "proxy_set_header_map_pairs", set_pairs)?;
    linker.func_wrap("env", "proxy_get_header_map_value", get_value)?;
    linker.func_wrap("env", "proxy_add_header_map_value", add_value)?;
    linker.func_wrap("env", "proxy_replace_header_map_value", replace_value)?;
    linker.func_wrap("env", "proxy_remove_header_map_value", remove_value)?;
    Ok(())
}

/// Largest serialised map we accept from a guest.
const MAX_MAP_BYTES: usize = 1 << 20;

/// One header: name and value bytes.
pub type Pair<'a> = (&'a [u8], &'a [u8]);

/// Serialises `pairs` in the ABI's map form.
pub fn serialize<'a>(pairs: impl IntoIterator<Item = Pair<'a>>) -> Vec<u8> {
    let pairs: Vec<Pair<'a>> = pairs.into_iter().collect();
    let mut out = vec![0; serialized_len(pairs.iter().copied())];
    // The buffer has exactly the size the pairs need, so this cannot fall short.
    let _ = serialize_into(|| pairs.iter().copied(), &mut out);
    out
}

/// How many bytes [`serialize`] makes of `pairs`.
fn serialized_len<'a>(pairs: impl Iterator<Item = Pair<'a>>) -> usize {
    pairs.fold(4usize, |s, (n, v)| s + 10 + n.len() + v.len())
}

/// Serialises `pairs` into `out` (guest memory, exactly [`serialized_len`] bytes) without a
/// host-side buffer; a count or length that does not fit, or an `out` of the wrong size, is a
/// [`Status::SerializationFailure`].
/// `pairs` makes the iterator afresh for each pass.
fn serialize_into<'a, I: Iterator<Item = Pair<'a>>>(
    pairs: impl Fn() -> I,
    out: &mut [u8],
) -> Result<(), Status> {
    use std::io::Write;
    let word = |n: usize| u32::try_from(n).map(u32::to_le_bytes);
    let mut w = &mut *out;
    let mut put = |bytes: &[u8]| w.write_all(bytes).map_err(|_| Status::SerializationFailure);
    let bad = |_| Status::SerializationFailure;
    put(&word(pairs().count()).map_err(bad)?)?;
    for (n, v) in pairs() {
        put(&word(n.len()).map_err(bad)?)?;
        put(&word(v.len()).map_err(bad)?)?;
    }
    for (n, v) in pairs() {
        put(n)?;
        put(&[0])?;
        put(v)?;
        put(&[0])?;
    }
    if w.is_empty() { Ok(()) } else { Err(Status::SerializationFailure) }
}

/// Parses a serialised map; any inconsistency (counts, lengths, missing NULs, trailing bytes)
/// is a [`Status::SerializationFailure`]. An empty input is an empty map.
pub fn parse(bytes: &[u8]) -> Result<Vec<Pair<'_>>, Status> {
    const BAD: Status = Status::SerializationFailure;
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    let word = |at: usize| -> Result<usize, Status> {
        let b = bytes.get(at..at + 4).ok_or(BAD)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    };
    let count = word(0)?;
    let mut data = count.checked_mul(8).and_then(|n| n.checked_add(4)).ok_or(BAD)?;
    if data > bytes.len() {
        return Err(BAD);
    }
    let mut out = Vec::with_capacity(count);
    for i in 0..count {
        let (nl, vl) = (word(4 + i * 8)?, word(8 + i * 8)?);
        let name = bytes.get(data..data.checked_add(nl).ok_or(BAD)?).ok_or(BAD)?;
        data += nl;
        (bytes.get(data) == Some(&0)).then_some(()).ok_or(BAD)?;
        data += 1;
        let value = bytes.get(data..data.checked_add(vl).ok_or(BAD)?).ok_or(BAD)?;
        data += vl;
        (bytes.get(data) == Some(&0)).then_some(()).ok_or(BAD)?;
        data += 1;
        out.push((name, value));
    }
    if data != bytes.len() {
        return Err(BAD);
    }
    Ok(out)
}

/// The map a `map_type` names, in the running HTTP context.
enum Target<'a> {
    Head(&'a mut Head),
    Trailers(&'a mut HeaderMap),
}

fn target(state: &mut HostState, map: u32) -> Result<Target<'_>, Status> {
    target_in(&mut state.http, &mut state.root.response, map)
}

/// As [`target`], borrowing only the HTTP context's state and the root context's answer.
fn target_in<'a>(
    http: &'a mut Option<Box<HttpState>>,
    root_answer: &'a mut Option<CallResponse>,
    map: u32,
) -> Result<Target<'a>, Status> {
    // Outside an HTTP context only the root context's answer to a call is there.
    let Some(http) = http.as_mut() else { return answer_target(root_answer, map) };
    Ok(match map {
        map_type::REQUEST_HEADERS => Target::Head(&mut http.request),
        map_type::RESPONSE_HEADERS => Target::Head(&mut http.response),
        map_type::REQUEST_TRAILERS => Target::Trailers(&mut http.request_trailers),
        map_type::RESPONSE_TRAILERS => Target::Trailers(&mut http.response_trailers),
        map_type::HTTP_CALL_RESPONSE_HEADERS => {
            Target::Head(&mut http.call_response.as_mut().ok_or(Status::NotFound)?.head)
        }
        map_type::HTTP_CALL_RESPONSE_TRAILERS => {
            Target::Trailers(&mut http.call_response.as_mut().ok_or(Status::NotFound)?.trailers)
        }
        _ => return Err(Status::BadArgument),
    })
}

/// The headers or trailers of an HTTP call's answer; any other map is not there.
fn answer_target(response: &mut Option<CallResponse>, map: u32) -> Result<Target<'_>, Status> {
    let response = response.as_mut().ok_or(Status::NotFound)?;
    match map {
        map_type::HTTP_CALL_RESPONSE_HEADERS => Ok(Target::Head(&mut response.head)),
        map_type::HTTP_CALL_RESPONSE_TRAILERS => Ok(Target::Trailers(&mut response.trailers)),
        _ => Err(Status::NotFound),
    }
}

fn name(interned: &mut Interned, raw: &[u8]) -> Result<HeaderName, Status> {
    interned.name(raw).map_err(|_| Status::BadArgument)
}

fn value(interned: &mut Interned, raw: &[u8]) -> Result<HeaderValue, Status> {
    interned.value(raw).map_err(|_| Status::BadArgument)
}

/// The pairs of a map as the guest sees them: pseudo-headers first.
fn pairs<'a>(t: &'a Target<'_>) -> impl Iterator<Item = Pair<'a>> {
    let (pseudo, headers) = match t {
        Target::Head(h) => (&h.pseudo[..], &h.headers),
        Target::Trailers(m) => (&[][..], &**m),
    };
    pseudo
        .iter()
        .map(|(n, v)| (n.as_bytes(), v.as_bytes()))
        .chain(headers.iter().map(|(n, v)| (n.as_str().as_bytes(), v.as_bytes())))
}

fn get_pairs(mut caller: Caller<'_, HostState>, map: u32, ret_ptr: u32, ret_len: u32) -> Answer {
    let len = match target(caller.data_mut(), map) {
        Ok(t) => serialized_len(pairs(&t)),
        Err(s) => return answer(Err(s)),
    };
    // Serialised straight into the guest's allocation.
    answer(memory::hand_over_with(&mut caller, len, ret_ptr, ret_len, |dst, state| {
        let t = target(state, map)?;
        serialize_into(|| pairs(&t), dst)
    })?)
}

fn set_pairs(mut caller: Caller<'_, HostState>, map: u32, ptr: u32, len: u32) -> Answer {
    if len as usize > MAX_MAP_BYTES {
        return answer(Err(Status::BadArgument));
    }
    let (data, state) = match memory::split(&mut caller) {
        Ok(split) => split,
        Err(e) => return answer(Err(e.into())),
    };
    // Parsed in place, in guest memory.
    answer(
        memory::slice(data, ptr, len)
            .map_err(Status::from)
            .and_then(|b| set_pairs_in(state, map, b)),
    )
}

fn set_pairs_in(state: &mut HostState, map: u32, bytes: &[u8]) -> Result<(), Status> {
    let pairs = parse(bytes)?;
    // Validate everything before changing anything.
    let mut pseudo = Vec::new();
    let mut headers = HeaderMap::with_capacity(pairs.len());
    for (n, v) in pairs {
        if n.first() == Some(&b':') {
            let n = std::str::from_utf8(n).map_err(|_| Status::BadArgument)?;
            let v = String::from_utf8(v.to_vec()).map_err(|_| Status::BadArgument)?;
            pseudo.push((n.to_owned(), v));
        } else {
            headers.append(name(&mut state.interned, n)?, value(&mut state.interned, v)?);
        }
    }
    match target(state, map)? {
        Target::Head(h) => {
            let mut fresh = Head { pseudo: Vec::new(), headers };
            for (n, v) in pseudo {
                if !fresh.set_pseudo(&n, v) {
                    return Err(Status::BadArgument);
                }
            }
            *h = fresh;
        }
        Target::Trailers(m) => {
            if !pseudo.is_empty() {
                return Err(Status::BadArgument);
            }
            *m = headers;
        }
    }
    Ok(())
}

fn get_value(
    mut caller: Caller<'_, HostState>,
    map: u32,
    key_ptr: u32,
    key_len: u32,
    ret_ptr: u32,
    ret_len: u32,
) -> Answer {
    let found = match memory::split(&mut caller)
        .and_then(|(data, state)| Ok((memory::slice(data, key_ptr, key_len)?, state)))
    {
        Ok((key, state)) => lookup(state, map, key),
        Err(e) => Err(e.into()),
    };
    let found = match found {
        Ok(v) => v,
        Err(s) => return answer(Err(s)),
    };
    answer(memory::hand_over(&mut caller, &found, ret_ptr, ret_len)?)
}

/// One header's value; several values are joined with `,` (as Envoy does).
fn lookup(state: &mut HostState, map: u32, key: &[u8]) -> Result<Vec<u8>, Status> {
    let t = target(state, map)?;
    if key.first() == Some(&b':') {
        let Target::Head(h) = t else { return Err(Status::NotFound) };
        let key = std::str::from_utf8(key).map_err(|_| Status::NotFound)?;
        return h.pseudo(key).map(|v| v.as_bytes().to_vec()).ok_or(Status::NotFound);
    }
    let headers = match t {
        Target::Head(h) => &h.headers,
        Target::Trailers(m) => &*m,
    };
    // Looked up without building a name (no allocation for a custom one).
    let key = std::str::from_utf8(key).map_err(|_| Status::NotFound)?;
    let mut values = headers.get_all(key).iter();
    let first = values.next().ok_or(Status::NotFound)?;
    let mut out = first.as_bytes().to_vec();
    for v in values {
        out.push(b',');
        out.extend_from_slice(v.as_bytes());
    }
    Ok(out)
}

#[derive(Clone, Copy)]
enum Edit {
    Add,
    Replace,
    Remove,
}

fn edit(state: &mut HostState, map: u32, key: &[u8], val: &[u8], how: Edit) -> Result<(), Status> {
    let interned = &mut state.interned;
    let t = target_in(&mut state.http, &mut state.root.response, map)?;
    if key.first() == Some(&b':') {
        let Target::Head(h) = t else { return Err(Status::BadArgument) };
        let key = std::str::from_utf8(key).map_err(|_| Status::BadArgument)?;
        return match how {
            // Pseudo-headers are single-valued and cannot be removed.
            Edit::Add | Edit::Replace => {
                let v = String::from_utf8(val.to_vec()).map_err(|_| Status::BadArgument)?;
                if h.set_pseudo(key, v) { Ok(()) } else { Err(Status::BadArgument) }
            }
            Edit::Remove => Err(Status::BadArgument),
        };
    }
    let headers = match t {
        Target::Head(h) => &mut h.headers,
        Target::Trailers(m) => m,
    };
    let n = name(interned, key)?;
    match how {
        Edit::Add => {
            headers.append(n, value(interned, val)?);
        }
        Edit::Replace => {
            headers.insert(n, value(interned, val)?);
        }
        Edit::Remove => {
            headers.remove(n);
        }
    }
    Ok(())
}

fn edit_call(
    caller: &mut Caller<'_, HostState>,
    map: u32,
    key: (u32, u32),
    val: (u32, u32),
    how: Edit,
) -> Answer {
    // Key and value are read in place, in guest memory.
    let (data, state) = match memory::split(caller) {
        Ok(split) => split,
        Err(e) => return answer(Err(e.into())),
    };
    let (key, val) = match (memory::slice(data, key.0, key.1), memory::slice(data, val.0, val.1)) {
        (Ok(k), Ok(v)) => (k, v),
        (Err(e), _) | (_, Err(e)) => return answer(Err(e.into())),
    };
    answer(edit(state, map, key, val, how))
}

fn add_value(mut c: Caller<'_, HostState>, map: u32, kp: u32, kl: u32, vp: u32, vl: u32) -> Answer {
    edit_call(&mut c, map, (kp, kl), (vp, vl), Edit::Add)
}

fn replace_value(
    mut c: Caller<'_, HostState>,
    map: u32,
    kp: u32,
    kl: u32,
    vp: u32,
    vl: u32,
) -> Answer {
    edit_call(&mut c, map, (kp, kl), (vp, vl), Edit::Replace)
}

fn remove_value(mut c: Caller<'_, HostState>, map: u32, kp: u32, kl: u32) -> Answer {
    edit_call(&mut c, map, (kp, kl), (0, 0), Edit::Remove)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serialize_and_parse_round_trip() {
        let pairs: Vec<(&[u8], &[u8])> = vec![(b":path", b"/a"), (b"x", b""), (b"k", b"v v")];
        let bytes = serialize(pairs.iter().copied());
        assert_eq!(parse(&bytes).unwrap(), pairs);
        assert_eq!(parse(&[]).unwrap(), Vec::<(&[u8], &[u8])>::new());
    }

    #[test]
    fn malformed_maps_are_rejected() {
        let good = serialize([(&b"a"[..], &b"b"[..])]);
        for cut in 1..good.len() {
            assert_eq!(parse(&good[..cut]), Err(Status::SerializationFailure), "cut {cut}");
        }
        let mut trailing = good.clone();
        trailing.push(0);
        assert!(parse(&trailing).is_err());
        let mut no_nul = good.clone();
        let at = no_nul.len() - 1;
        no_nul[at] = b'x';
        assert!(parse(&no_nul).is_err());
        assert!(parse(&u32::MAX.to_le_bytes()).is_err());
    }
}
