//! Imports we do not implement (shared queues, `proxy_http_call`, gRPC, foreign functions, most
//! of WASI, …) are still linked, so such modules load: each answers `UNIMPLEMENTED` (WASI:
//! `ENOSYS`), counts in `gatehouse_wasm_unimplemented_calls_total`, and never traps.

use wasmtime::{ExternType, Linker, Module, Val, ValType};

use crate::abi::{Status, wasi};
use crate::error::WasmError;
use crate::state::HostState;

/// Import modules a proxy-wasm guest may use.
const PROXY_MODULE: &str = "env";

/// Links a stub for every function import of `module` that `linker` does not define yet.
/// Imports from other modules, or that are not functions, fail the load with a clear error.
pub(crate) fn link_stubs(
    linker: &mut Linker<HostState>,
    known: &std::collections::HashSet<(String, String)>,
    module: &Module,
) -> Result<(), WasmError> {
    for import in module.imports() {
        let (m, name) = (import.module(), import.name());
        if known.contains(&(m.to_owned(), name.to_owned())) {
            continue;
        }
        let ExternType::Func(ty) = import.ty() else {
            return Err(WasmError::Import(format!("{m}.{name} is not a function")));
        };
        let code = match m {
            PROXY_MODULE => Status::Unimplemented.code(),
            wasi::MODULE => wasi::ENOSYS,
            _ => return Err(WasmError::Import(format!("{m}.{name}: unknown import module {m:?}"))),
        };
        let function = format!("{m}.{name}");
        // The first result carries the status; any others are zero.
        let answers: Vec<Val> = ty
            .results()
            .enumerate()
            .map(|(i, t)| match t {
                ValType::I32 if i == 0 => Val::I32(code as i32),
                ValType::I64 if i == 0 => Val::I64(i64::from(code)),
                t => Val::default_for_ty(&t).unwrap_or(Val::I32(0)),
            })
            .collect();
        linker
            .func_new(m, name, ty.clone(), move |caller, _params, results| {
                let plugin = &caller.data().plugin;
                plugin.host_metrics.unimplemented(&plugin.name, &function);
                tracing::debug!(target: "wasm", plugin = %plugin.name, function, "unimplemented host function");
                for (slot, a) in results.iter_mut().zip(&answers) {
                    *slot = *a;
                }
                Ok(())
            })
            .map_err(|e| WasmError::Import(format!("{m}.{name}: {e}")))?;
    }
    Ok(())
}
