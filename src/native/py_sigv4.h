/* The Python binding of zs_sigv4_check, for the tests that hold it to api/sigv4.py (py_sigv4.c). */
#ifndef ZS_PY_SIGV4_H
#define ZS_PY_SIGV4_H
#define PY_SSIZE_T_CLEAN
#include <Python.h>

/* sigv4_check(method: bytes, raw_path: bytes, query: bytes, headers: list[tuple[bytes, bytes]], body: bytes,
 *             region: str, service: str, now: int, secrets: dict[str, str]) -> str | None
 * The access key id when the signature holds, else None. */
PyObject *zs_py_sigv4_check(PyObject *self, PyObject *args);

#endif
