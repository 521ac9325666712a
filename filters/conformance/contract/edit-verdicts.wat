;; Answers one edit list through the core ABI's edit verdict,
;; {"verdict":"edit","edits":[...]}, with every kind of edit: a label set
;; twice (the last wins), defaults for a label it has (kept) and one it
;; has not (set: set-label-if-absent), removes of absent keys (no-ops), an annotation, a
;; JSON object in extra, an extra set then removed, and the message (message
;; and note together). The output is the input with these changes applied
;; in order; uid, resource_version and every other field unchanged.
(module
  (memory (export "memory") 2)
  (data (i32.const 16) "{\"verdict\":\"edit\",\"edits\":[{\"set-label\":[\"conformance\",\"a\"]},{\"set-label\":[\"conformance\",\"b\"]},{\"set-label-if-absent\":[\"conformance\",\"c\"]},{\"set-label-if-absent\":[\"if-absent\",\"set\"]},{\"remove-label\":\"no-such-label\"},{\"set-annotation\":[\"checked-by\",\"edit-verdicts\"]},{\"remove-annotation\":\"no-such-annotation\"},{\"set-extra\":[\"edit\",{\"n\":1,\"list\":[true,null,\"x\"]}]},{\"set-extra\":[\"gone\",1]},{\"remove-extra\":\"gone\"},{\"set-message\":\"edited by the contract module\"}]}")
  (func (export "alloc") (param i32) (result i32) (i32.const 4096))
  (func (export "process") (param i32 i32) (result i64)
    (i64.or (i64.shl (i64.const 16) (i64.const 32)) (i64.const 461))))
