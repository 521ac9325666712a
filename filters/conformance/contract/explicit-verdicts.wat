;; Answers {"verdict":"keep"} (spelled out, not the 0 shortcut) when the event
;; JSON is shorter than 1000 bytes and {"verdict":"drop"} otherwise, and logs
;; through event_collector.log; init accepts only the config {}.
(module
  (import "event_collector" "log" (func $log (param i32 i32 i32)))
  (memory (export "memory") 2)
  (data (i32.const 16) "{\"verdict\":\"keep\"}")
  (data (i32.const 48) "{\"verdict\":\"drop\"}")
  (data (i32.const 80) "explicit-verdicts ready")
  (data (i32.const 112) "config must be {}")
  (func (export "alloc") (param i32) (result i32) (i32.const 4096))
  (func (export "init") (param $ptr i32) (param $len i32) (result i64)
    (if (i32.ne (local.get $len) (i32.const 2))
      (then (return (i64.or (i64.shl (i64.const 112) (i64.const 32)) (i64.const 17)))))
    (call $log (i32.const 2) (i32.const 80) (i32.const 23))
    (i64.const 0))
  (func (export "process") (param $ptr i32) (param $len i32) (result i64)
    (if (result i64) (i32.lt_u (local.get $len) (i32.const 1000))
      (then (i64.or (i64.shl (i64.const 16) (i64.const 32)) (i64.const 18)))
      (else (i64.or (i64.shl (i64.const 48) (i64.const 32)) (i64.const 18))))))
