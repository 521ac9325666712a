;; Answers an edit list whose first edit is fine and whose second is not,
;; picked by the input's length mod 4: an empty extra key, a label value
;; that is not a string, an edit the contract does not have (set-uid), an
;; empty annotation key. Each is an error, and no edit may be applied.
(module
  (memory (export "memory") 2)
  (data (i32.const 16) "{\"verdict\":\"edit\",\"edits\":[{\"set-label\":[\"team\",\"x\"]},{\"set-extra\":[\"\",1]}]}")
  (data (i32.const 92) "{\"verdict\":\"edit\",\"edits\":[{\"set-label\":[\"team\",\"x\"]},{\"set-label\":[\"count\",5]}]}")
  (data (i32.const 173) "{\"verdict\":\"edit\",\"edits\":[{\"set-label\":[\"team\",\"x\"]},{\"set-uid\":\"another\"}]}")
  (data (i32.const 250) "{\"verdict\":\"edit\",\"edits\":[{\"set-label\":[\"team\",\"x\"]},{\"remove-annotation\":\"\"}]}")
  (func (export "alloc") (param i32) (result i32) (i32.const 4096))
  (func (export "process") (param $ptr i32) (param $len i32) (result i64)
    (block $b3 (block $b2 (block $b1 (block $b0
      (br_table $b0 $b1 $b2 $b3 (i32.and (local.get $len) (i32.const 3))))
      (return (i64.or (i64.shl (i64.const 16) (i64.const 32)) (i64.const 76))))
      (return (i64.or (i64.shl (i64.const 92) (i64.const 32)) (i64.const 81))))
      (return (i64.or (i64.shl (i64.const 173) (i64.const 32)) (i64.const 77))))
    (i64.or (i64.shl (i64.const 250) (i64.const 32)) (i64.const 80))))
