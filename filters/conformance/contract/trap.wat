;; Traps in process (after a successful init): every event must take the
;; error path, and the host must re-instantiate before the next event.
(module
  (memory (export "memory") 2)
  (func (export "alloc") (param i32) (result i32) (i32.const 4096))
  (func (export "process") (param i32 i32) (result i64) unreachable))
