;; Returns a result that is not JSON: an error, not a crash of the host.
(module
  (memory (export "memory") 2)
  (data (i32.const 16) "this is not json")
  (func (export "alloc") (param i32) (result i32) (i32.const 4096))
  (func (export "process") (param i32 i32) (result i64)
    (i64.or (i64.shl (i64.const 16) (i64.const 32)) (i64.const 16))))
