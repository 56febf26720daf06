fn main() {
    // Let the binary find the libpython it was linked against without LD_LIBRARY_PATH.
    #[cfg(feature = "python")]
    pyo3_build_config::add_libpython_rpath_link_args();
}
