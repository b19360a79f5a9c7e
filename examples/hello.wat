;; A WASI command that greets whoever it is given on stdin, or the world.
;;   wasmcage run examples/hello.wat
;;   echo -n wasmcage | wasmcage run examples/hello.wat
(module
  (import "wasi_snapshot_preview1" "fd_read"
    (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 100) "Hello, ")
  (data (i32.const 200) "world")
  (data (i32.const 300) "!\n")

  ;; Writes `len` bytes at `ptr` to stdout.
  (func $print (param $ptr i32) (param $len i32)
    (i32.store (i32.const 0) (local.get $ptr))
    (i32.store (i32.const 4) (local.get $len))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8))))

  (func (export "_start")
    (local $n i32)
    (call $print (i32.const 100) (i32.const 7))
    ;; Read up to 256 bytes of a name from stdin into offset 1024.
    (i32.store (i32.const 16) (i32.const 1024))
    (i32.store (i32.const 20) (i32.const 256))
    (drop (call $fd_read (i32.const 0) (i32.const 16) (i32.const 1) (i32.const 24)))
    (local.set $n (i32.load (i32.const 24)))
    (if (i32.eqz (local.get $n))
      (then (call $print (i32.const 200) (i32.const 5)))
      (else (call $print (i32.const 1024) (local.get $n))))
    (call $print (i32.const 300) (i32.const 2))))
