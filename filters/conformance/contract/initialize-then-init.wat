;; Checks the call order: _initialize, then init, then process. process traps
;; unless both ran, in that order.
(module
  (memory (export "memory") 2)
  (global $state (mut i32) (i32.const 0))
  (func (export "_initialize")
    (if (i32.ne (global.get $state) (i32.const 0)) (then unreachable))
    (global.set $state (i32.const 1)))
  (func (export "alloc") (param i32) (result i32) (i32.const 4096))
  (func (export "init") (param i32 i32) (result i64)
    (if (i32.ne (global.get $state) (i32.const 1)) (then unreachable))
    (global.set $state (i32.const 2))
    (i64.const 0))
  (func (export "process") (param i32 i32) (result i64)
    (if (i32.ne (global.get $state) (i32.const 2)) (then unreachable))
    (i64.const 0)))
