"""Guest modules the tests upload, as WAT text."""

ADD = """(module
  (func (export "add") (param i32 i32) (result i32) (i32.add (local.get 0) (local.get 1)))
  (func (export "trap") unreachable)
  (func (export "spin") (loop (br 0))))"""

ECHO = """(module
  (import "wasi_snapshot_preview1" "fd_read" (func $read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 1024)) (i32.store (i32.const 4) (i32.const 4096))
    (drop (call $read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 8)))
    (i32.store (i32.const 4) (i32.load (i32.const 8)))
    (drop (call $write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"""

# The smallest valid module, as a binary: the magic and the version.
EMPTY_BINARY = b"\0asm\x01\0\0\0"


def numbered(n: int) -> str:
    """A distinct module per n (its identity is its hash)."""
    return f'(module (func (export "f{n}") (result i32) (i32.const {n})))'
