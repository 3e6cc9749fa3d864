package e2e

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// TestPrometheus scrapes skbstat --listen with a real Prometheus server
// every second: after a known number of drops, PromQL through the server's
// HTTP API must give exactly that number, and the row likewise.
func TestPrometheus(t *testing.T) {
	requireRoot(t)
	p := newPair(t)
	listen := freeAddr(t)
	r := startSkbstat(t, "--listen", listen, "-q", "--input", "-i", "60", "-d", p.b4, "-D", closedPort, "-p", "udp")
	prom := startPrometheus(t, "skbstat", listen)
	p.sendUDP(t, datagrams, p.a4, p.b4)
	settle()
	prom.waitScrape(t, "skbstat", time.Now())
	prom.expect(t, `sum(skbstat_drops_total{reason="NO_SOCKET"})`, datagrams)
	prom.expect(t, `sum(skbstat_packets_total{section="INGRESS",probe="net:netif_receive_skb"})`, datagrams)
	prom.expect(t, `sum(skbstat_uncounted_total)`, 0)
	prom.expect(t, `count(skbstat_build_info)`, 1)
	r.stop(t, syscall.SIGINT)
}

// TestNodeExporterTextfile has skbstat --textfile write into the folder of
// node_exporter's textfile collector, which Prometheus scrapes.
func TestNodeExporterTextfile(t *testing.T) {
	requireRoot(t)
	exporter, err := exec.LookPath("prometheus-node-exporter")
	if err != nil {
		t.Fatal("prometheus-node-exporter is not installed (Debian's package of that name; test/all.sh installs it)")
	}
	p := newPair(t)
	dir := t.TempDir()
	r := startSkbstat(t, "--textfile", filepath.Join(dir, "skbstat.prom"), "-q", "-i", "0.2", "-d", p.b4, "-D", closedPort, "-p", "udp")
	node := freeAddr(t)
	startServer(t, "http://"+node+"/metrics", exporter, "--web.listen-address="+node,
		"--collector.disable-defaults", "--collector.textfile", "--collector.textfile.directory="+dir)
	prom := startPrometheus(t, "node", node)
	p.sendUDP(t, datagrams, p.a4, p.b4)
	settle()
	time.Sleep(500 * time.Millisecond) // an interval of skbstat's writes the file
	prom.waitScrape(t, "node", time.Now())
	prom.expect(t, `sum(skbstat_drops_total{reason="NO_SOCKET"})`, datagrams)
	prom.expect(t, `sum(node_textfile_scrape_error)`, 0)
	r.stop(t, syscall.SIGINT)
	if tmp, _ := filepath.Glob(filepath.Join(dir, "*.tmp")); len(tmp) > 0 {
		t.Errorf("temporary files left beside the textfile: %v", tmp)
	}
}

// freeAddr returns a loopback address with a TCP port nothing listens on.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// startServer starts a server and waits until url answers 200.
func startServer(t *testing.T, url string, argv ...string) {
	t.Helper()
	cmd := exec.Command(argv[0], argv[1:]...)
	log, err := os.Create(filepath.Join(t.TempDir(), "log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if resp, err := http.Get(url); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			out, _ := os.ReadFile(log.Name())
			t.Fatalf("%s did not answer %s in 30 s:\n%s", argv[0], url, out)
		}
	}
}

// prometheus is a Prometheus server of the test's own, on loopback.
type prometheus struct{ addr string }

// startPrometheus starts Prometheus with temporary storage, scraping target
// as job every second.
func startPrometheus(t *testing.T, job, target string) prometheus {
	t.Helper()
	bin, err := exec.LookPath("prometheus")
	if err != nil {
		t.Fatal("prometheus is not installed (Debian's package of that name; test/all.sh installs it)")
	}
	dir := t.TempDir()
	config := filepath.Join(dir, "prometheus.yml")
	yml := fmt.Sprintf("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: %s\n    static_configs:\n      - targets: [%q]\n", job, target)
	if err := os.WriteFile(config, []byte(yml), 0o644); err != nil {
		t.Fatal(err)
	}
	p := prometheus{addr: freeAddr(t)}
	startServer(t, "http://"+p.addr+"/-/ready", bin, "--config.file="+config, "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+p.addr, "--log.level=warn")
	return p
}

// query returns the value of the instant query q, and whether it has one.
func (p prometheus) query(t *testing.T, q string) (float64, bool) {
	t.Helper()
	resp, err := http.Get("http://" + p.addr + "/api/v1/query?query=" + url.QueryEscape(q))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct {
		Status string `json:"status"`
		Data   struct {
			Result []struct {
				Value [2]any `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil || body.Status != "success" {
		t.Fatalf("query %s: status %q, %v", q, body.Status, err)
	}
	if len(body.Data.Result) == 0 {
		return 0, false
	}
	s, _ := body.Data.Result[0].Value[1].(string)
	v, err := strconv.ParseFloat(s, 64)
	if err != nil {
		t.Fatalf("query %s: value %q: %v", q, s, err)
	}
	return v, true
}

// waitScrape waits until Prometheus has scraped job successfully after
// after.
func (p prometheus) waitScrape(t *testing.T, job string, after time.Time) {
	t.Helper()
	q := fmt.Sprintf(`timestamp(up{job=%q} == 1)`, job)
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		if ts, ok := p.query(t, q); ok && ts > float64(after.UnixMilli())/1000 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("Prometheus did not scrape %s in 30 s", job)
		}
	}
}

// expect checks that the instant query q gives want.
func (p prometheus) expect(t *testing.T, q string, want float64) {
	t.Helper()
	if got, ok := p.query(t, q); !ok || got != want {
		t.Errorf("%s: %v (a value: %v), want %v", q, got, ok, want)
	}
}
