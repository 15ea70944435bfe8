// pprof-target is the Go program the Biometrics tests profile: it serves net/http/pprof
// and keeps known workloads running so that every profile type has something to show —
// a CPU burner, an allocator, parked goroutines, and mutex and channel contention — and
// lets a test move its runtime metrics (heap, goroutines) on request. Environment
// variables shape its CPU for rollout comparisons: CPU_DUTY_HASHES bounds the CPU loop to
// that many hashes per 10 ms tick (run it with GOMAXPROCS=1 to keep the runtime's own
// threads from spreading); REQUEST_HASHES makes each /work request hash that many times,
// so its CPU follows the requests it answers as a service's does (a starved replica
// answers fewer, each costing the same); SELF_RPS sends it that many requests per second
// of its own from the start, at random moments; EXTRA_HASH_ROUNDS adds that many
// rounds of hashing to each tick and each request in main.extraHashRounds, the function a
// slower release adds; ADDED_DELAY_MS adds that many milliseconds to each /work request
// from the start (as /control?delay_ms= does at runtime), the latency a slower release
// adds; and RETAIN_MB keeps that much heap from the start in main.retainMiB, the function
// a hungrier release adds.
// It serves its requests (/work) with a latency histogram and a request counter on
// /metrics in the Prometheus text format, and /control adds latency, a share of 5xx
// answers, or steady traffic to itself, or ends it (exit=1, as a batch job's work ends).
// On SIGTERM it stops accepting connections and
// finishes the requests in flight (a CPU profile being taken included) before it exits,
// as a service with graceful shutdown does within its termination grace period.
package main

import (
	"context"
	"crypto/sha256"
	"errors"
	"flag"
	"fmt"
	"log"
	"math/rand"
	"net/http"
	_ "net/http/pprof"
	"os"
	"os/signal"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

var (
	churnSink  []byte
	retainedMu sync.Mutex
	retained   [][]byte
	parked     = make(chan struct{})
	contended  sync.Mutex
)

// burnCPU hashes in a loop: the hottest function of every CPU profile. With a duty (hashes
// per 10 ms tick) it does that much work each tick, and extra rounds of extraHashRounds
// after it, and sleeps the rest; without one it runs flat out, the extra rounds after
// every 1000 hashes.
func burnCPU(duty, extra int) {
	buf := make([]byte, 4096)
	if duty <= 0 {
		for {
			for i := 0; i < 1000; i++ {
				sum := sha256.Sum256(buf)
				buf[0] = sum[0]
			}
			hashSink += extraHashRounds(buf, extra)
			runtime.Gosched()
		}
	}
	// Each tick's work is due at a fixed time: a tick that starts late (the machine was
	// busy) is caught up, so the work per second stays the same; more than 100 ms behind,
	// the schedule starts again from now rather than burst.
	next := time.Now()
	for {
		for i := 0; i < duty; i++ {
			sum := sha256.Sum256(buf)
			buf[0] = sum[0]
		}
		hashSink += extraHashRounds(buf, extra)
		next = next.Add(10 * time.Millisecond)
		if wait := time.Until(next); wait > 0 {
			time.Sleep(wait)
		} else if wait < -100*time.Millisecond {
			next = time.Now()
		}
	}
}

var hashSink uint64

// hashWork is one request's CPU: hashes SHA-256 hashes of a 4 KiB buffer, with rounds of
// extraHashRounds spread evenly between them. Interleaved, neither function keeps to one
// end of the request's burst of work: a CPU profile's sample is taken at the first
// scheduler tick after the thread's 10 ms of CPU are up, which favours the later parts of
// short bursts, so work done last would be over-counted.
func hashWork(hashes, rounds int) uint64 {
	buf := make([]byte, 4096)
	if hashes == 0 {
		return extraHashRounds(buf, rounds)
	}
	var sink uint64
	for i := 0; i < hashes; i++ {
		sum := sha256.Sum256(buf)
		buf[0] = sum[0]
		if share := rounds*(i+1)/hashes - rounds*i/hashes; share > 0 {
			sink += extraHashRounds(buf, share)
		}
	}
	return sink
}

// extraHashRounds hashes buf (FNV-1a) rounds times in its own body, so a CPU profile counts
// the time as this function's own: what a rollout that adds work shows grown.
//
//go:noinline
func extraHashRounds(buf []byte, rounds int) uint64 {
	h := uint64(14695981039346656037)
	for r := 0; r < rounds; r++ {
		for _, b := range buf {
			h ^= uint64(b)
			h *= 1099511628211
		}
	}
	return h
}

// envInt reads a non-negative integer from the environment (0 when unset), or exits.
func envInt(name string) int {
	v := os.Getenv(name)
	if v == "" {
		return 0
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 || n > 1000000 {
		log.Fatalf("%s must be an integer 0..1000000, not %q", name, v)
	}
	return n
}

// millis reads a delay of 0..60000 milliseconds named name (a query parameter or an
// environment variable).
func millis(name, v string) (time.Duration, error) {
	ms, err := strconv.Atoi(v)
	if err != nil || ms < 0 || ms > 60000 {
		return 0, fmt.Errorf("%s must be 0..60000, not %q", name, v)
	}
	return time.Duration(ms) * time.Millisecond, nil
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

// retain keeps n MiB more of live heap until /free.
func retain(w http.ResponseWriter, r *http.Request) {
	mb, err := strconv.Atoi(r.URL.Query().Get("mb"))
	if err != nil || mb < 0 || mb > 4096 {
		http.Error(w, "mb must be 0..4096", http.StatusBadRequest)
		return
	}
	fmt.Fprintf(w, "retained %d MiB\n", retainMiB(mb))
}

// retainMiB keeps mb MiB more of live heap, allocated in this function (so a heap profile
// credits it), and returns how many MiB are kept in all.
//
//go:noinline
func retainMiB(mb int) int {
	retainedMu.Lock()
	defer retainedMu.Unlock()
	for i := 0; i < mb; i++ {
		b := make([]byte, 1<<20)
		for j := range b {
			b[j] = byte(j)
		}
		retained = append(retained, b)
	}
	return len(retained)
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

// The request metrics: a latency histogram and a request counter per status code,
// written in the text format by hand (standard library only).
var (
	requestsMu   sync.Mutex
	bounds       = []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5}
	byCode       = map[string]*histogram{}
	served       uint64
	addedDelay   time.Duration
	metricsDelay time.Duration
	errorPercent float64
	loadStop     chan struct{}
	selfAddr     string
	// Each request's own CPU: REQUEST_HASHES hashes and EXTRA_HASH_ROUNDS rounds.
	requestHashes int
	requestExtra  int
)

type histogram struct {
	buckets []uint64 // per bound, not cumulative; the last one is +Inf
	sum     float64
	count   uint64
}

func observe(code string, seconds float64) {
	requestsMu.Lock()
	defer requestsMu.Unlock()
	h := byCode[code]
	if h == nil {
		h = &histogram{buckets: make([]uint64, len(bounds)+1)}
		byCode[code] = h
	}
	i := sort.SearchFloat64s(bounds, seconds)
	h.buckets[i]++
	h.sum += seconds
	h.count++
}

// work is the app's own endpoint: a millisecond of work, the added delay, and a 500 for
// the configured share of requests (every request whose ordinal crosses the next whole
// error, so the share is exact over any run of requests).
func work(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	requestsMu.Lock()
	served++
	n := served
	delay, share := addedDelay, errorPercent
	requestsMu.Unlock()
	if requestHashes > 0 || requestExtra > 0 {
		hashSink += hashWork(requestHashes, requestExtra)
	}
	time.Sleep(time.Millisecond + delay)
	code := http.StatusOK
	if uint64(float64(n)*share/100) != uint64(float64(n-1)*share/100) {
		code = http.StatusInternalServerError
	}
	w.WriteHeader(code)
	fmt.Fprintf(w, "request %d: %d\n", n, code)
	observe(strconv.Itoa(code), time.Since(start).Seconds())
}

// metrics writes the histogram and the counter.
func metrics(w http.ResponseWriter, r *http.Request) {
	requestsMu.Lock()
	delay := metricsDelay
	requestsMu.Unlock()
	// A busy app answers its metrics late; the figures are those of when it answers.
	time.Sleep(delay)
	requestsMu.Lock()
	defer requestsMu.Unlock()
	codes := make([]string, 0, len(byCode))
	for c := range byCode {
		codes = append(codes, c)
	}
	sort.Strings(codes)
	var b strings.Builder
	b.WriteString("# HELP http_request_duration_seconds Time to answer a request.\n# TYPE http_request_duration_seconds histogram\n")
	for _, c := range codes {
		h := byCode[c]
		var cumulative uint64
		for i, le := range bounds {
			cumulative += h.buckets[i]
			fmt.Fprintf(&b, "http_request_duration_seconds_bucket{code=\"%s\",handler=\"/work\",le=\"%s\"} %d\n", c, strconv.FormatFloat(le, 'g', -1, 64), cumulative)
		}
		fmt.Fprintf(&b, "http_request_duration_seconds_bucket{code=\"%s\",handler=\"/work\",le=\"+Inf\"} %d\n", c, h.count)
		fmt.Fprintf(&b, "http_request_duration_seconds_sum{code=\"%s\",handler=\"/work\"} %g\n", c, h.sum)
		fmt.Fprintf(&b, "http_request_duration_seconds_count{code=\"%s\",handler=\"/work\"} %d\n", c, h.count)
	}
	b.WriteString("# HELP http_requests_total Requests answered.\n# TYPE http_requests_total counter\n")
	for _, c := range codes {
		fmt.Fprintf(&b, "http_requests_total{code=\"%s\",handler=\"/work\"} %d\n", c, byCode[c].count)
	}
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	fmt.Fprint(w, b.String())
}

// control sets the added latency (delay_ms), how late /metrics answers
// (metrics_delay_ms), the share of 500s (error_percent) and the steady traffic the target
// sends itself (rps); each is optional.
func control(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	requestsMu.Lock()
	defer requestsMu.Unlock()
	for name, delay := range map[string]*time.Duration{"delay_ms": &addedDelay, "metrics_delay_ms": &metricsDelay} {
		if v := q.Get(name); v != "" {
			d, err := millis(name, v)
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			*delay = d
		}
	}
	if v := q.Get("error_percent"); v != "" {
		p, err := strconv.ParseFloat(v, 64)
		if err != nil || p < 0 || p > 100 {
			http.Error(w, "error_percent must be 0..100", http.StatusBadRequest)
			return
		}
		errorPercent = p
	}
	if v := q.Get("rps"); v != "" {
		rps, err := strconv.Atoi(v)
		if err != nil || rps < 0 || rps > 1000 {
			http.Error(w, "rps must be 0..1000", http.StatusBadRequest)
			return
		}
		if loadStop != nil {
			close(loadStop)
			loadStop = nil
		}
		if rps > 0 {
			loadStop = make(chan struct{})
			go load(rps, loadStop)
		}
	}
	fmt.Fprintf(w, "delay %v, errors %g%%\n", addedDelay, errorPercent)
	// exit=1 ends the app as SIGTERM does, after this answer: a batch job's work done.
	if q.Get("exit") == "1" {
		go syscall.Kill(os.Getpid(), syscall.SIGTERM)
	}
}

// load sends rps requests per second to the target's own /work until stop closes, at
// random moments (a Poisson process, as independent clients' requests arrive): requests
// on a fixed 1/rps beat would keep each one's work at the same phase of the kernel's
// scheduler tick, which is when a CPU profile's sample is taken, so the profile would
// credit whichever function runs at that phase rather than each by its time.
func load(rps int, stop chan struct{}) {
	client := &http.Client{Timeout: 70 * time.Second}
	mean := float64(time.Second) / float64(rps)
	next := time.Now()
	for {
		next = next.Add(time.Duration(rand.ExpFloat64() * mean))
		// Behind by more than 100 ms (the process was starved), it starts again from now
		// rather than send what it missed in one burst.
		if time.Until(next) < -100*time.Millisecond {
			next = time.Now()
		}
		select {
		case <-stop:
			return
		case <-time.After(time.Until(next)):
			go func() {
				resp, err := client.Get("http://" + selfAddr + "/work")
				if err == nil {
					resp.Body.Close()
				}
			}()
		}
	}
}

func main() {
	addr := flag.String("addr", "127.0.0.1:6060", "address to serve pprof on")
	idle := flag.Bool("idle", false, "run no workload: only serve pprof (to measure what serving costs)")
	flag.Parse()
	requestHashes, requestExtra = envInt("REQUEST_HASHES"), envInt("EXTRA_HASH_ROUNDS")
	if v := os.Getenv("ADDED_DELAY_MS"); v != "" {
		d, err := millis("ADDED_DELAY_MS", v)
		if err != nil {
			log.Fatal(err)
		}
		addedDelay = d
	}
	if mb := envInt("RETAIN_MB"); mb > 4096 {
		log.Fatalf("RETAIN_MB must be 0..4096, not %d", mb)
	} else if mb > 0 {
		retainMiB(mb)
	}
	if !*idle {
		go burnCPU(envInt("CPU_DUTY_HASHES"), envInt("EXTRA_HASH_ROUNDS"))
		runtime.SetBlockProfileRate(1)
		runtime.SetMutexProfileFraction(1)
		go churn()
		for i := 0; i < 4; i++ {
			go contend()
		}
	}
	http.HandleFunc("/retain", retain)
	http.HandleFunc("/free", free)
	http.HandleFunc("/spawn", spawn)
	http.HandleFunc("/hot", hot)
	http.HandleFunc("/work", work)
	http.HandleFunc("/metrics", metrics)
	http.HandleFunc("/control", control)
	// An HTML page where a metrics reader might look: what an app behind a login answers.
	http.HandleFunc("/login", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprint(w, "<!DOCTYPE html>\n<html><body><form>Sign in</form></body></html>\n")
	})
	selfAddr = *addr
	if rps := envInt("SELF_RPS"); rps > 0 {
		if rps > 1000 {
			log.Fatalf("SELF_RPS must be 0..1000, not %d", rps)
		}
		loadStop = make(chan struct{})
		go load(rps, loadStop)
	}
	server := &http.Server{Addr: *addr}
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		terminate := make(chan os.Signal, 1)
		signal.Notify(terminate, syscall.SIGTERM, os.Interrupt)
		<-terminate
		log.Printf("pprof-target shutting down: finishing the requests in flight")
		// Its own traffic stops first: nothing new is sent to a server that is closing.
		requestsMu.Lock()
		if loadStop != nil {
			close(loadStop)
			loadStop = nil
		}
		requestsMu.Unlock()
		// The kubelet kills the process at the end of the grace period anyway; a minute is
		// longer than any profile a test asks for.
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := server.Shutdown(ctx); err != nil {
			log.Printf("pprof-target: %v", err)
		}
	}()
	log.Printf("pprof-target serving on %s", *addr)
	if err := server.ListenAndServe(); !errors.Is(err, http.ErrServerClosed) {
		log.Fatal(err)
	}
	<-stopped
}
