//! The embedded interpreter: initialised with `executable` = the venv's python, so that
//! `sys.prefix`/`sys.executable` are the venv's. Rust owns the signals ([`super::stop`]):
//! Python installs none of its own, except that its table names `default_int_handler` for
//! SIGINT, so that Rust's handler can raise `KeyboardInterrupt` in it. Only
//! used when the venv's interpreter is the very build mlxfs links.

use std::ffi::{CStr, CString};
use std::sync::OnceLock;

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::PyCFunction;

use super::capture::{Captured, Redirect};
use super::{Event, Handler, PythonEnv, RunError, RunErrorKind, STOP, Script};

/// `sys.version` of the libpython mlxfs is linked with.
pub fn linked_version() -> String {
    // SAFETY: Py_GetVersion returns a static string and may be called before initialisation.
    unsafe { CStr::from_ptr(ffi::Py_GetVersion()) }
        .to_string_lossy()
        .into_owned()
}

/// Can this environment run in-process? `Err` says why not (then the subprocess runs).
pub fn usable(env: &PythonEnv) -> Result<(), String> {
    let linked = linked_version();
    match super::python::sys_version(&env.python) {
        Some(v) if v == linked => Ok(()),
        Some(v) => Err(format!(
            "{} is Python {}, mlxfs embeds Python {}",
            env.python.display(),
            v.split_whitespace().next().unwrap_or("?"),
            linked.split_whitespace().next().unwrap_or("?")
        )),
        None => Err(format!("cannot run {}", env.python.display())),
    }
}

static INIT: OnceLock<Result<(), String>> = OnceLock::new();

fn initialize(env: &PythonEnv) -> Result<(), String> {
    INIT.get_or_init(|| {
        let exe =
            CString::new(env.python.as_os_str().as_encoded_bytes()).map_err(|e| e.to_string())?;
        // SAFETY: the documented PyConfig sequence; `config` lives until PyConfig_Clear.
        unsafe {
            let mut config: ffi::PyConfig = std::mem::zeroed();
            ffi::PyConfig_InitPythonConfig(&mut config);
            config.install_signal_handlers = 0;
            let st =
                ffi::PyConfig_SetBytesString(&mut config, &mut config.executable, exe.as_ptr());
            if ffi::PyStatus_Exception(st) != 0 {
                ffi::PyConfig_Clear(&mut config);
                return Err("cannot set the interpreter path".into());
            }
            let st = ffi::Py_InitializeFromConfig(&config);
            ffi::PyConfig_Clear(&mut config);
            if ffi::PyStatus_Exception(st) != 0 {
                let msg = if st.err_msg.is_null() {
                    "unknown error".to_string()
                } else {
                    CStr::from_ptr(st.err_msg).to_string_lossy().into_owned()
                };
                return Err(format!("cannot start the embedded Python: {msg}"));
            }
            // SIGINT raises KeyboardInterrupt: Python's table names its default handler (this
            // also installs Python's C handler, which `stop` replaces with its own again).
            let code = c"import signal\nsignal.signal(signal.SIGINT, signal.default_int_handler)\n";
            let interruptible = ffi::PyRun_SimpleString(code.as_ptr()) == 0;
            // Release the GIL so that pyo3 can take it.
            ffi::PyEval_SaveThread();
            if interruptible {
                super::stop::python_interruptible();
            }
        }
        Ok(())
    })
    .clone()
}

/// Run the generation code in the embedded interpreter. fd 1 and 2 are redirected for the
/// whole call (start-up included: a `sitecustomize` may print), so what Python and the C
/// libraries it loads write is captured ([`Redirect`]); tokens still reach mlxfs's stdout
/// through the handler, which writes to the saved descriptor ([`super::Stdout`]). Returns what
/// was captured; a failure carries it too.
pub fn run(
    env: &PythonEnv,
    script: Script,
    request: &str,
    handler: Handler,
) -> Result<Captured, RunError> {
    // Without a redirect (fd 1 or 2 closed: nothing to protect, or no pipe left) the run
    // goes ahead uncaptured.
    let redirect = Redirect::start().ok();
    let result = run_inner(env, script, request, handler);
    let output = redirect.map(Redirect::finish).unwrap_or_default();
    match result {
        Ok(()) => Ok(output),
        Err(e) => Err(e.with_output(output)),
    }
}

fn run_inner(
    env: &PythonEnv,
    script: Script,
    request: &str,
    handler: Handler,
) -> Result<(), RunError> {
    initialize(env).map_err(|m| RunError::new(RunErrorKind::PythonInitFailed, m, None))?;
    let nul = |_| {
        RunError::new(
            RunErrorKind::PythonInitFailed,
            "the embedded Python code holds a NUL byte",
            None,
        )
    };
    let cstr = |s: &str| CString::new(s).map_err(nul);
    // The shared modules first, in their order (each is in `sys.modules` once created), named
    // as a subprocess names them (`mlxfs_common.install`); then the script as a module.
    let mut shared = Vec::new();
    for (name, source) in script.shared() {
        shared.push((cstr(source)?, cstr(&format!("{name}.py"))?, cstr(name)?));
    }
    let name = match script {
        Script::Generate => "mlxfs_generate",
        Script::Convert => "mlxfs_convert",
    };
    let (code, file, name) = (
        cstr(script.source())?,
        cstr(&format!("{name}.py"))?,
        cstr(name)?,
    );
    Python::attach(|py| -> PyResult<()> {
        for (code, file, name) in &shared {
            PyModule::from_code(py, code, file, name)?;
        }
        let module = PyModule::from_code(py, &code, &file, &name)?;
        let h = handler.clone();
        let emit = PyCFunction::new_closure(py, None, None, move |args, _kw| -> PyResult<()> {
            let line: String = args.get_item(0)?.extract()?;
            if let Some(ev) = Event::parse(&line) {
                (h.lock().unwrap_or_else(|e| e.into_inner()))(ev);
            }
            Ok(())
        })?;
        let stop = PyCFunction::new_closure(py, None, None, |_args, _kw| -> PyResult<bool> {
            Ok(STOP.load(std::sync::atomic::Ordering::SeqCst))
        })?;
        module.getattr("run")?.call1((request, emit, stop))?;
        Ok(())
    })
    .or_else(|e| {
        // Ctrl-C: the Python code answers `interrupted` where it can; a KeyboardInterrupt that
        // got out of it (raised after its answer, or where it cannot catch it) is no failure.
        let interrupted =
            Python::attach(|py| e.is_instance_of::<pyo3::exceptions::PyKeyboardInterrupt>(py));
        if interrupted { Ok(()) } else { Err(e) }
    })
    .map_err(|e| {
        let what = match script {
            Script::Generate => "generation",
            Script::Convert => "conversion",
        };
        RunError::new(
            RunErrorKind::PythonError,
            format!("{what} failed: {e}"),
            None,
        )
    })
}
