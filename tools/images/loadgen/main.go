// loadgen keeps live traffic on one URL while a mesh is changed under it, and counts every request by phase.
//
// Two kinds of traffic run side by side, as an upgrade meets them: new connections at a fixed rate (one request
// each, the connection closed after) and long-lived keep-alive connections, each sending its next request as soon as
// the last one answered (paced by -interval). A request fails when it gets no answer within -timeout, a status
// other than 200, or a body that is not the HelloWorld sample's. Phases are named from outside
// (`loadgen phase NAME`, run in the same pod): every request is counted in the phase it started in. `loadgen
// stop` ends the traffic once every started request has its outcome. `loadgen report` prints every phase as JSON: requests sent, failures with the first error, answers by body, and latency
// percentiles. Zero tolerance is the reader's: this program only counts.
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"sort"
	"strings"
	"sync"
	"time"
)

const control = "127.0.0.1:15990"

type kindStats struct {
	Sent   int64 `json:"sent"`
	Failed int64 `json:"failed"`
}

type phase struct {
	Name       string           `json:"name"`
	StartedMs  int64            `json:"started_ms"`
	EndedMs    int64            `json:"ended_ms"`
	Sent       int64            `json:"sent"`
	Failed     int64            `json:"failed"`
	FirstError string           `json:"first_error,omitempty"`
	Errors     map[string]int64 `json:"errors"`
	Answers    map[string]int64 `json:"answers"`
	New        kindStats        `json:"new_connections"`
	KeepAlive  kindStats        `json:"keep_alive"`
	P50Ms      float64          `json:"p50_ms"`
	P99Ms      float64          `json:"p99_ms"`
	latencies  []float64
}

type recorder struct {
	mu       sync.Mutex
	phases   []*phase
	stopped  bool
	inflight sync.WaitGroup
}

// stop ends the traffic: no request starts after it, and it returns once every started one has its outcome
// (each ends within the request timeout), so a report read after it counts every request.
func (r *recorder) stop() {
	r.mu.Lock()
	r.stopped = true
	r.current().EndedMs = time.Now().UnixMilli()
	r.mu.Unlock()
	r.inflight.Wait()
}

func newPhase(name string) *phase {
	return &phase{Name: name, StartedMs: time.Now().UnixMilli(), Errors: map[string]int64{}, Answers: map[string]int64{}}
}

func (r *recorder) current() *phase { return r.phases[len(r.phases)-1] }

func (r *recorder) begin(name string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.current().EndedMs = time.Now().UnixMilli()
	r.phases = append(r.phases, newPhase(name))
}

// start counts one request in the current phase and returns that phase, unless the generator was stopped.
func (r *recorder) start(keepAlive bool) (*phase, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.stopped {
		return nil, false
	}
	p := r.current()
	p.Sent++
	if keepAlive {
		p.KeepAlive.Sent++
	} else {
		p.New.Sent++
	}
	r.inflight.Add(1)
	return p, true
}

// record counts the outcome of one request in the phase p it started in.
func (r *recorder) record(p *phase, keepAlive bool, took time.Duration, body string, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	defer r.inflight.Done()
	k := &p.New
	if keepAlive {
		k = &p.KeepAlive
	}
	if err != nil {
		p.Failed++
		k.Failed++
		msg := err.Error()
		if len(msg) > 200 {
			msg = msg[:200]
		}
		if p.FirstError == "" {
			p.FirstError = time.Now().UTC().Format(time.RFC3339Nano) + " " + msg
		}
		p.Errors[msg]++
		return
	}
	p.Answers[body]++
	p.latencies = append(p.latencies, float64(took.Microseconds())/1000)
}

func percentile(sorted []float64, q float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(q*float64(len(sorted)-1) + 0.5)
	return sorted[i]
}

func (r *recorder) report() []byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, p := range r.phases {
		l := append([]float64(nil), p.latencies...)
		sort.Float64s(l)
		p.P50Ms, p.P99Ms = percentile(l, 0.50), percentile(l, 0.99)
	}
	out, err := json.Marshal(map[string]any{"phases": r.phases, "now_ms": time.Now().UnixMilli()})
	if err != nil {
		return []byte(fmt.Sprintf(`{"error":%q}`, err.Error()))
	}
	return out
}

func get(c *http.Client, url string) (string, error) {
	resp, err := c.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if err != nil {
		return "", fmt.Errorf("reading the answer: %w", err)
	}
	body := strings.TrimSpace(string(b))
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("HTTP %d: %s", resp.StatusCode, body)
	}
	if !strings.HasPrefix(body, "Hello version:") {
		return "", fmt.Errorf("not a HelloWorld answer: %s", body)
	}
	return body, nil
}

func run(url string, rate float64, conns int, interval, timeout time.Duration) {
	rec := &recorder{phases: []*phase{newPhase("start")}}
	// New connections: a fresh client per request, keep-alives off.
	go func() {
		tick := time.NewTicker(time.Duration(float64(time.Second) / rate))
		defer tick.Stop()
		for range tick.C {
			p, ok := rec.start(false)
			if !ok {
				return
			}
			go func() {
				c := &http.Client{Timeout: timeout, Transport: &http.Transport{DisableKeepAlives: true}}
				t0 := time.Now()
				body, err := get(c, url)
				rec.record(p, false, time.Since(t0), body, err)
			}()
		}
	}()
	// Keep-alive connections: one client each, one connection reused for every request.
	for i := 0; i < conns; i++ {
		go func() {
			tr := &http.Transport{MaxIdleConnsPerHost: 1, MaxConnsPerHost: 1, IdleConnTimeout: 10 * time.Minute}
			c := &http.Client{Timeout: timeout, Transport: tr}
			for {
				p, ok := rec.start(true)
				if !ok {
					return
				}
				t0 := time.Now()
				body, err := get(c, url)
				rec.record(p, true, time.Since(t0), body, err)
				time.Sleep(interval)
			}
		}()
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/phase", func(w http.ResponseWriter, r *http.Request) {
		name := r.URL.Query().Get("name")
		if name == "" {
			http.Error(w, "name is required", http.StatusBadRequest)
			return
		}
		rec.begin(name)
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/stop", func(w http.ResponseWriter, r *http.Request) {
		rec.stop()
		fmt.Fprintln(w, "stopped")
	})
	mux.HandleFunc("/report", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write(rec.report())
	})
	srv := &http.Server{Addr: control, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	log.Printf("loadgen: %s at %.1f new connections/s and %d keep-alive connections; control on %s", url, rate, conns, control)
	log.Fatal(srv.ListenAndServe())
}

// ctl asks the running loadgen in this pod and prints its answer.
func ctl(path string) error {
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get("http://" + control + path)
	if err != nil {
		var op *net.OpError
		if errors.As(err, &op) {
			return fmt.Errorf("no loadgen answers on %s: %w", control, err)
		}
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("loadgen answered HTTP %d: %s", resp.StatusCode, strings.TrimSpace(string(b)))
	}
	os.Stdout.Write(b)
	return nil
}

func main() {
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case "phase":
			if len(os.Args) != 3 {
				log.Fatal("usage: loadgen phase NAME")
			}
			if err := ctl("/phase?name=" + os.Args[2]); err != nil {
				log.Fatal(err)
			}
			return
		case "stop":
			if err := ctl("/stop"); err != nil {
				log.Fatal(err)
			}
			return
		case "report":
			if err := ctl("/report"); err != nil {
				log.Fatal(err)
			}
			return
		}
	}
	url := flag.String("url", "http://helloworld.sample:5000/hello", "the URL every request gets")
	rate := flag.Float64("rate", 10, "new connections per second, one request each")
	conns := flag.Int("connections", 2, "long-lived keep-alive connections")
	interval := flag.Duration("interval", 100*time.Millisecond, "pause between requests on a keep-alive connection")
	timeout := flag.Duration("timeout", 5*time.Second, "a request without an answer in this time failed")
	flag.Parse()
	if *rate <= 0 || *conns < 0 {
		log.Fatal("-rate must be > 0 and -connections >= 0")
	}
	run(*url, *rate, *conns, *interval, *timeout)
}
