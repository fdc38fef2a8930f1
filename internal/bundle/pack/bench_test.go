package pack

import (
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mse-in-go/mse/internal/bundle"
)

func reportGBs(b *testing.B, n int64) {
	b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GB/s")
}

// genTree writes about size bytes of incompressible data into dir: files of
// fileSize bytes, 100 files per directory.
func genTree(tb testing.TB, dir string, size, fileSize int64) {
	tb.Helper()
	r := rand.NewChaCha8([32]byte{7})
	buf := make([]byte, 1<<20)
	for i := int64(0); i*fileSize < size; i++ {
		sub := filepath.Join(dir, fmt.Sprintf("d%03d", i/100))
		os.MkdirAll(sub, 0o755)
		f, err := os.Create(filepath.Join(sub, fmt.Sprintf("f%05d.bin", i)))
		if err != nil {
			tb.Fatal(err)
		}
		for left := fileSize; left > 0; {
			n := min(left, int64(len(buf)))
			r.Read(buf[:n])
			if _, err := f.Write(buf[:n]); err != nil {
				tb.Fatal(err)
			}
			left -= n
		}
		f.Close()
	}
}

var benchTree struct {
	once sync.Once
	dir  string
	ct   []byte
	key  bundle.Key
	size int64
}

// benchBundle: a 64 MiB tree (256 files of 256 KiB) and its bundle, made once.
func benchBundle(b *testing.B) (string, []byte, bundle.Key, int64) {
	benchTree.once.Do(func() {
		d, err := os.MkdirTemp("", "bundle-bench")
		if err != nil {
			b.Fatal(err)
		}
		benchTree.dir = d
		benchTree.size = 64 << 20
		genTree(b, d, benchTree.size, 256<<10)
		benchTree.key = testKey(3)
		var buf bytes.Buffer
		if _, err := Seal(d, &buf, benchTree.key, bundle.Limits{}, nil); err != nil {
			b.Fatal(err)
		}
		benchTree.ct = buf.Bytes()
	})
	return benchTree.dir, benchTree.ct, benchTree.key, benchTree.size
}

func BenchmarkSeal(b *testing.B) {
	dir, _, key, size := benchBundle(b)
	b.SetBytes(size)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Seal(dir, io.Discard, key, bundle.Limits{}, nil); err != nil {
			b.Fatal(err)
		}
	}
	reportGBs(b, size)
}

func BenchmarkCheck(b *testing.B) {
	_, ct, key, size := benchBundle(b)
	b.SetBytes(size)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := bundle.Check(bytes.NewReader(ct), key, bundle.Limits{}); err != nil {
			b.Fatal(err)
		}
	}
	reportGBs(b, size)
}

func BenchmarkOpen(b *testing.B) {
	_, ct, key, size := benchBundle(b)
	base := b.TempDir()
	b.SetBytes(size)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		out := filepath.Join(base, strconv.Itoa(i))
		i++
		if _, err := bundle.Open(bytes.NewReader(ct), key, out, bundle.Limits{}); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		os.RemoveAll(out)
		b.StartTimer()
	}
	reportGBs(b, size)
}

// TestPeakMemory shows that memory use does not grow with the size of the
// code. It is slow and writes several GiB to disk, so it only runs on demand:
//
//	MSE_BUNDLE_MEMTEST=64M,1G go test ./internal/bundle/pack -run TestPeakMemory -v -timeout 30m
//
// For each size, it generates a tree of 4 MiB files, then seals it to a file,
// checks the bundle and opens it, sampling runtime.MemStats every 2 ms.
func TestPeakMemory(t *testing.T) {
	spec := os.Getenv("MSE_BUNDLE_MEMTEST")
	if spec == "" {
		t.Skip("set MSE_BUNDLE_MEMTEST=64M,1G to run")
	}
	for _, s := range strings.Split(spec, ",") {
		size := parseSize(t, s)
		t.Run(s, func(t *testing.T) {
			base := t.TempDir()
			src := filepath.Join(base, "src")
			genTree(t, src, size, 4<<20)
			key, _ := bundle.NewKey()
			bundlePath := filepath.Join(base, "app.bundle")

			var sealed Sealed
			phase(t, "seal", size, func() error {
				f, err := os.Create(bundlePath)
				if err != nil {
					return err
				}
				defer f.Close()
				sealed, err = Seal(src, f, key, bundle.Limits{}, nil)
				return err
			})
			phase(t, "check", size, func() error {
				f, err := os.Open(bundlePath)
				if err != nil {
					return err
				}
				defer f.Close()
				_, err = bundle.Check(f, key, bundle.Limits{})
				return err
			})
			phase(t, "open", size, func() error {
				f, err := os.Open(bundlePath)
				if err != nil {
					return err
				}
				defer f.Close()
				_, err = bundle.Open(f, key, filepath.Join(base, "out"), bundle.Limits{})
				return err
			})
			t.Logf("bundle: %d bytes, %d files", sealed.Size, sealed.Files)
		})
	}
}

func phase(t *testing.T, name string, size int64, f func() error) {
	t.Helper()
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	stop := make(chan struct{})
	done := make(chan [2]uint64)
	go func() {
		var peakHeap, peakSys uint64
		var m runtime.MemStats
		tick := time.NewTicker(2 * time.Millisecond)
		defer tick.Stop()
		for {
			runtime.ReadMemStats(&m)
			peakHeap = max(peakHeap, m.HeapInuse)
			peakSys = max(peakSys, m.Sys)
			select {
			case <-stop:
				done <- [2]uint64{peakHeap, peakSys}
				return
			case <-tick.C:
			}
		}
	}()
	start := time.Now()
	err := f()
	el := time.Since(start)
	close(stop)
	peaks := <-done
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	t.Logf("%-5s %6d MiB: %6.2fs %7.1f MB/s  peak HeapInuse %5.1f MiB  peak Sys %5.1f MiB  allocated %6.1f MiB",
		name, size>>20, el.Seconds(), float64(size)/el.Seconds()/1e6,
		float64(peaks[0])/(1<<20), float64(peaks[1])/(1<<20), float64(after.TotalAlloc-before.TotalAlloc)/(1<<20))
}

func parseSize(t *testing.T, s string) int64 {
	mult := int64(1)
	switch {
	case strings.HasSuffix(s, "G"):
		mult, s = 1<<30, strings.TrimSuffix(s, "G")
	case strings.HasSuffix(s, "M"):
		mult, s = 1<<20, strings.TrimSuffix(s, "M")
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		t.Fatalf("bad size %q", s)
	}
	return n * mult
}
