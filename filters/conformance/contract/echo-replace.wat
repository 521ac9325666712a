;; Replaces every event with itself, through the ABI's replace result:
;; {"verdict":"replace","event":<input>}. The output must equal the input.
;; The input lands at 4096 (up to 60 KiB), the output is built at 65536.
(module
  (memory (export "memory") 3)
  (data (i32.const 16) "{\"verdict\":\"replace\",\"event\":")
  (func (export "alloc") (param $size i32) (result i32)
    (if (i32.gt_u (local.get $size) (i32.const 61440)) (then (return (i32.const 0))))
    (i32.const 4096))
  (func (export "process") (param $ptr i32) (param $len i32) (result i64)
    (memory.copy (i32.const 65536) (i32.const 16) (i32.const 29))
    (memory.copy (i32.const 65565) (local.get $ptr) (local.get $len))
    (i32.store8 (i32.add (i32.const 65565) (local.get $len)) (i32.const 125))  ;; '}'
    (i64.or (i64.shl (i64.const 65536) (i64.const 32))
            (i64.extend_i32_u (i32.add (local.get $len) (i32.const 30))))))
