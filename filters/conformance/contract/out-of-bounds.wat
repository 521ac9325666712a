;; Returns a result pointer/length outside linear memory: an error.
(module
  (memory (export "memory") 2)
  (func (export "alloc") (param i32) (result i32) (i32.const 4096))
  (func (export "process") (param i32 i32) (result i64)
    (i64.or (i64.shl (i64.const 131000) (i64.const 32)) (i64.const 4096))))
