// go-namespace-prefix: keeps (mode "keep") or drops (mode "drop") events whose
// namespace starts with one of the configured prefixes.
//
// A core WebAssembly module for event-collector's core-module ABI (see
// guest-sdk/README.md): built as a wasip1 reactor (-buildmode=c-shared) with
// //go:wasmexport; the host calls _initialize once, then init, then process.
package main

import (
	"encoding/json"
	"fmt"
	"strings"
	"unsafe"
)

// main is never called in a reactor (c-shared) build.
func main() {}

// ---- the core-module ABI -------------------------------------------------

// Buffers handed to the host. Go's GC does not move objects, so a pointer
// into a slice stays valid while a package variable refers to the slice.
var (
	inBuf  []byte // alloc's buffer, reused while big enough
	outBuf []byte // the last result, valid until the next call
)

//go:wasmexport alloc
func alloc(size int32) int32 {
	if size < 0 {
		return 0
	}
	if int32(cap(inBuf)) < size || cap(inBuf) == 0 {
		n := size
		if n < 1024 {
			n = 1024
		}
		inBuf = make([]byte, n)
	}
	return int32(uintptr(unsafe.Pointer(&inBuf[0])))
}

// input returns the bytes the host wrote at ptr (always inside inBuf).
func input(ptr, length int32) []byte {
	if length == 0 {
		return nil
	}
	return unsafe.Slice((*byte)(unsafe.Pointer(uintptr(ptr))), int(length))
}

// result keeps b alive and packs (ptr << 32) | len for the host.
func result(b []byte) int64 {
	outBuf = b
	if len(b) == 0 {
		return 0
	}
	return int64(uintptr(unsafe.Pointer(&outBuf[0])))<<32 | int64(len(outBuf))
}

//go:wasmimport event_collector log
func hostLog(level int32, ptr unsafe.Pointer, length int32)

const (
	levelDebug = 1
	levelInfo  = 2
	levelWarn  = 3
)

func logf(level int32, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	if len(msg) == 0 {
		return
	}
	b := []byte(msg)
	hostLog(level, unsafe.Pointer(&b[0]), int32(len(b)))
}

// ---- the filter --------------------------------------------------------------

type config struct {
	Prefixes []string `json:"prefixes"`
	Mode     string   `json:"mode"`
}

var (
	prefixes   []string
	keepOnHit  = true
	configured = false
)

//go:wasmexport init
func initFilter(ptr, length int32) int64 {
	var c config
	dec := json.NewDecoder(strings.NewReader(string(input(ptr, length))))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return result([]byte("invalid filter config: " + err.Error()))
	}
	switch c.Mode {
	case "", "keep":
		keepOnHit = true
	case "drop":
		keepOnHit = false
	default:
		return result([]byte(fmt.Sprintf("invalid filter config: mode must be \"keep\" or \"drop\", not %q", c.Mode)))
	}
	if c.Prefixes == nil {
		return result([]byte("invalid filter config: \"prefixes\" is required (a list of namespace prefixes)"))
	}
	prefixes = c.Prefixes
	configured = true
	mode := "keep"
	if !keepOnHit {
		mode = "drop"
	}
	logf(levelInfo, "%s events in namespaces starting with %q", mode, prefixes)
	return 0
}

// Only the field this filter reads: encoding/json skips the rest.
type eventNamespace struct {
	Namespace *string `json:"namespace"`
}

var resultDrop = []byte(`{"verdict":"drop"}`)

//go:wasmexport process
func process(ptr, length int32) int64 {
	if !configured {
		return errorResult("process called before init")
	}
	var ev eventNamespace
	if err := json.Unmarshal(input(ptr, length), &ev); err != nil {
		return errorResult("not a normalized event: " + err.Error())
	}
	ns := ""
	if ev.Namespace != nil {
		ns = *ev.Namespace
	}
	hit := false
	for _, p := range prefixes {
		if strings.HasPrefix(ns, p) {
			hit = true
			break
		}
	}
	if hit == keepOnHit {
		return 0 // the ABI's shortcut for {"verdict":"keep"}
	}
	return result(resultDrop)
}

func errorResult(msg string) int64 {
	b, _ := json.Marshal(map[string]string{"error": msg})
	return result(b)
}
