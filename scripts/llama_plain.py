"""llama.cpp (llama-cpp-python) on its plain CPU weight buffers, for every script and test that
compares with it.

llama.cpp's repacked (AMX / interleaved) CPU weight buffers, its "extra buffer types", segfault in
this machine's llama-cpp-python 0.3.36 build (Intel with AMX, seen 2026-12-07; MXFP4 models too).
The plain CPU buffers give the same numerics and are the path Strata is compared with. Python's
binding has no flag for it, so llama_model_default_params is wrapped to set use_extra_bufts=False.

Import it from the repository's scripts/ folder (bench/ and tests/py/ put that on sys.path)."""
import contextlib


def _without_extra_buffers(default_params):
    def params():
        p = default_params()
        p.use_extra_bufts = False
        return p

    params.strata_plain = True
    return params


def no_extra_buffers(llama_cpp=None):
    """use_extra_bufts=False for every Llama made afterwards (calling it again changes nothing)."""
    if llama_cpp is None:
        import llama_cpp
    C = llama_cpp.llama_cpp
    if not getattr(C.llama_model_default_params, "strata_plain", False):
        C.llama_model_default_params = _without_extra_buffers(C.llama_model_default_params)


@contextlib.contextmanager
def extra_buffers_off(llama_cpp=None):
    """The same for the Llama objects made inside the with block only."""
    if llama_cpp is None:
        import llama_cpp
    C = llama_cpp.llama_cpp
    default_params = C.llama_model_default_params
    C.llama_model_default_params = _without_extra_buffers(default_params)
    try:
        yield
    finally:
        C.llama_model_default_params = default_params


def plain_cpu_llama(path, **kw):
    """llama_cpp.Llama(model_path=path, **kw) on the plain CPU buffers (the setting left as it was)."""
    import llama_cpp

    with extra_buffers_off(llama_cpp):
        return llama_cpp.Llama(model_path=path, **kw)
