// pprof-target is the Go program the Biometrics tests profile: it serves net/http/pprof
// and keeps known workloads running so that every profile type has something to show —
// a CPU burner, an allocator, parked goroutines, and mutex and channel contention — and
// lets a test move its runtime metrics (heap, goroutines) on request.
package main

import (
	"crypto/sha256"
	"flag"
	"fmt"
	"log"
	"net/http"
	_ "net/http/pprof"
	"runtime"
	"strconv"
	"sync"
	"time"
)

var (
	churnSink  []byte
	retainedMu sync.Mutex
	retained   [][]byte
	parked     = make(chan struct{})
	contended  sync.Mutex
)

// burnCPU hashes in a loop: the hottest function of every CPU profile.
func burnCPU() {
	buf := make([]byte, 4096)
	for {
		for i := 0; i < 1000; i++ {
			sum := sha256.Sum256(buf)
			buf[0] = sum[0]
		}
		runtime.Gosched()
	}
}

// burnHot hashes until the deadline: a function a test makes hot on request (/hot), so
// that a profile taken meanwhile shows it grown against one taken before.
func burnHot(deadline time.Time) {
	buf := make([]byte, 4096)
	for time.Now().Before(deadline) {
		for i := 0; i < 1000; i++ {
			sum := sha256.Sum256(buf)
			buf[0] = sum[0]
		}
	}
}

// hot runs burnHot for ms milliseconds in the background.
func hot(w http.ResponseWriter, r *http.Request) {
	ms, err := strconv.Atoi(r.URL.Query().Get("ms"))
	if err != nil || ms < 0 || ms > 600000 {
		http.Error(w, "ms must be 0..600000", http.StatusBadRequest)
		return
	}
	go burnHot(time.Now().Add(time.Duration(ms) * time.Millisecond))
	fmt.Fprintf(w, "hot for %d ms\n", ms)
}

// churn allocates short-lived buffers: the allocs profile's subject.
func churn() {
	for {
		b := make([]byte, 256<<10)
		b[0] = 1
		churnSink = b
		time.Sleep(time.Millisecond)
	}
}

// contend fights over one mutex so the mutex and block profiles are not empty.
func contend() {
	for {
		contended.Lock()
		time.Sleep(100 * time.Microsecond)
		contended.Unlock()
	}
}

// retain keeps n MiB of live heap until /free.
func retain(w http.ResponseWriter, r *http.Request) {
	mb, err := strconv.Atoi(r.URL.Query().Get("mb"))
	if err != nil || mb < 0 || mb > 4096 {
		http.Error(w, "mb must be 0..4096", http.StatusBadRequest)
		return
	}
	retainedMu.Lock()
	for i := 0; i < mb; i++ {
		b := make([]byte, 1<<20)
		for j := range b {
			b[j] = byte(j)
		}
		retained = append(retained, b)
	}
	total := len(retained)
	retainedMu.Unlock()
	fmt.Fprintf(w, "retained %d MiB\n", total)
}

func free(w http.ResponseWriter, r *http.Request) {
	retainedMu.Lock()
	retained = nil
	retainedMu.Unlock()
	runtime.GC()
	fmt.Fprintln(w, "freed")
}

// spawn parks n more goroutines.
func spawn(w http.ResponseWriter, r *http.Request) {
	n, err := strconv.Atoi(r.URL.Query().Get("n"))
	if err != nil || n < 0 || n > 100000 {
		http.Error(w, "n must be 0..100000", http.StatusBadRequest)
		return
	}
	for i := 0; i < n; i++ {
		go func() { <-parked }()
	}
	fmt.Fprintf(w, "goroutines %d\n", runtime.NumGoroutine())
}

func main() {
	addr := flag.String("addr", "127.0.0.1:6060", "address to serve pprof on")
	idle := flag.Bool("idle", false, "run no workload: only serve pprof (to measure what serving costs)")
	flag.Parse()
	if !*idle {
		runtime.SetBlockProfileRate(1)
		runtime.SetMutexProfileFraction(1)
		go burnCPU()
		go churn()
		for i := 0; i < 4; i++ {
			go contend()
		}
	}
	http.HandleFunc("/retain", retain)
	http.HandleFunc("/free", free)
	http.HandleFunc("/spawn", spawn)
	http.HandleFunc("/hot", hot)
	log.Printf("pprof-target serving on %s", *addr)
	log.Fatal(http.ListenAndServe(*addr, nil))
}
