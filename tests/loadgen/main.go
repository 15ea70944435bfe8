// loadgen sends steady HTTP traffic to every address a name resolves to: the demo's load
// generator. In a cluster the name is a Service's (one ClusterIP, spread by kube-proxy);
// where Services resolve to their pods' addresses, as a headless Service does, it spreads
// the requests itself by taking each address in turn. Requests go out at random moments at
// the given mean rate (a Poisson process, as independent clients' do): on a fixed beat
// each request's work would keep the same phase of the kernel's scheduler tick, when a CPU
// profile's samples are taken, and the profiles would credit functions by phase rather than
// by time. Every ten seconds it logs what it sent.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log"
	"math/rand"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"sort"
	"syscall"
	"time"
)

// tally counts the answers of one reporting period.
type tally struct {
	sent, ok, failed int
	slowest          time.Duration
}

func (t tally) String() string {
	return fmt.Sprintf("sent %d: %d ok, %d failed, slowest %s", t.sent, t.ok, t.failed, t.slowest.Round(time.Millisecond))
}

// addresses resolves host to its addresses, sorted so the turn order is stable.
func addresses(ctx context.Context, host string) []string {
	found, err := net.DefaultResolver.LookupHost(ctx, host)
	if err != nil {
		log.Printf("resolving %s: %v", host, err)
		return nil
	}
	sort.Strings(found)
	return found
}

func main() {
	target := flag.String("url", "http://checkout:6060/", "the URL to request; its host is looked up again every 5 s")
	rate := flag.Float64("rate", 20, "requests per second, spread over the host's addresses")
	timeout := flag.Duration("timeout", 5*time.Second, "how long one request may take")
	flag.Parse()
	u, err := url.Parse(*target)
	if err != nil || u.Host == "" || *rate <= 0 {
		fmt.Fprintln(os.Stderr, "loadgen: -url must be an absolute URL and -rate positive")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	client := &http.Client{Timeout: *timeout}
	results := make(chan tally, 1024)
	mean := float64(time.Second) / *rate
	gap := func() time.Duration { return time.Duration(rand.ExpFloat64() * mean) }
	tick := time.NewTimer(gap())
	refresh := time.NewTicker(5 * time.Second)
	report := time.NewTicker(10 * time.Second)
	var current []string
	resolved := false
	var period tally
	next := 0
	log.Printf("sending %.0f requests per second to %s", *rate, *target)
	for {
		if !resolved {
			current, resolved = addresses(ctx, u.Hostname()), true
		}
		select {
		case <-ctx.Done():
			log.Printf("stopping; %s", period)
			return
		case <-refresh.C:
			resolved = false
		case <-report.C:
			log.Print(period)
			period = tally{}
		case r := <-results:
			period.ok += r.ok
			period.failed += r.failed
			if r.slowest > period.slowest {
				period.slowest = r.slowest
			}
		case <-tick.C:
			tick.Reset(gap())
			if len(current) == 0 {
				period.sent++
				period.failed++
				continue
			}
			each := *u
			each.Host = net.JoinHostPort(current[next%len(current)], u.Port())
			if u.Port() == "" {
				each.Host = current[next%len(current)]
			}
			next++
			period.sent++
			go func(address string) {
				start := time.Now()
				request, _ := http.NewRequestWithContext(ctx, http.MethodGet, address, nil)
				request.Host = u.Host
				response, err := client.Do(request)
				var r tally
				if err == nil {
					_, _ = io.Copy(io.Discard, response.Body)
					_ = response.Body.Close()
				}
				if err == nil && response.StatusCode < 500 {
					r.ok = 1
				} else {
					r.failed = 1
				}
				r.slowest = time.Since(start)
				results <- r
			}(each.String())
		}
	}
}
