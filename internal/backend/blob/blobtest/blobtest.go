// Package blobtest is the conformance suite of blob.Store implementations:
// a behaviour is part of the contract when this suite checks it.
package blobtest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mse-in-go/mse/internal/backend/blob"
)

// Suite describes the store under test.
type Suite struct {
	// New returns a new, empty store.
	New func(t *testing.T) blob.Store
	// Partial lists what partial uploads the store holds (temporary files,
	// incomplete multipart uploads): after a failed Put there must be none.
	Partial func(t *testing.T, s blob.Store) []string
	// Big is a content size that takes several of the store's write units
	// (several multipart parts); default 3 MiB.
	Big int
}

// Content is n deterministic bytes (seeded), cheap to make and to compare.
func Content(n int, seed byte) []byte {
	b := make([]byte, n)
	x := uint32(seed)*2654435761 + 1
	for i := range b {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		b[i] = byte(x)
	}
	return b
}

// Run runs the suite.
func Run(t *testing.T, su Suite) {
	if su.Big == 0 {
		su.Big = 3 << 20
	}
	ctx := context.Background()
	tests := []struct {
		name string
		fn   func(t *testing.T, s blob.Store)
	}{
		{"RoundTrip", su.roundTrip},
		{"Overwrite", su.overwrite},
		{"TooLarge", su.tooLarge},
		{"InvalidKeys", su.invalidKeys},
		{"Missing", func(t *testing.T, s blob.Store) {
			if _, err := s.Open(ctx, "nothing-here"); !errors.Is(err, blob.ErrNotFound) {
				t.Errorf("Open of a missing blob: %v, want ErrNotFound", err)
			}
			if err := s.Delete(ctx, "nothing-here"); err != nil {
				t.Errorf("Delete of a missing blob: %v, want nil", err)
			}
		}},
		{"Verified", su.verified},
		{"ReaderFails", su.readerFails},
		{"Canceled", su.canceled},
		{"Concurrent", su.concurrent},
		{"SweepSparesInFlight", su.sweepSparesInFlight},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.fn(t, su.New(t))
		})
	}
}

var ctx = context.Background()

func (su Suite) noPartial(t *testing.T, s blob.Store, after string) {
	t.Helper()
	if su.Partial == nil {
		return
	}
	if p := su.Partial(t, s); len(p) != 0 {
		t.Errorf("after %s, partial uploads remain: %v", after, p)
	}
}

func mustPut(t *testing.T, s blob.Store, key string, data []byte) {
	t.Helper()
	info, err := s.Put(ctx, key, bytes.NewReader(data), int64(len(data)))
	if err != nil {
		t.Fatalf("Put %s (%d bytes): %v", key, len(data), err)
	}
	if info.Size != int64(len(data)) || info.SHA256 != sha256.Sum256(data) {
		t.Fatalf("Put %s = size %d sha %x, want %d %x", key, info.Size, info.SHA256[:6], len(data), sha256.Sum256(data))
	}
}

// Has checks that key holds exactly want.
func Has(t *testing.T, s blob.Store, key string, want []byte) {
	t.Helper()
	r, err := s.Open(ctx, key)
	if err != nil {
		t.Fatalf("Open %s: %v", key, err)
	}
	defer r.Close()
	got, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("read %s: %v", key, err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s holds %d bytes (sha %x), want %d (sha %x)", key, len(got), sha256.Sum256(got), len(want), sha256.Sum256(want))
	}
}

// Absent checks that nothing is visible under key.
func Absent(t *testing.T, s blob.Store, key string) {
	t.Helper()
	if r, err := s.Open(ctx, key); !errors.Is(err, blob.ErrNotFound) {
		if err == nil {
			r.Close()
		}
		t.Fatalf("Open %s: %v, want ErrNotFound", key, err)
	}
	keys, err := s.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if slices.Contains(keys, key) {
		t.Fatalf("List has %s: %v", key, keys)
	}
}

func (su Suite) roundTrip(t *testing.T, s blob.Store) {
	sizes := []int{0, 1, 1000, su.Big - 1, su.Big, su.Big + 12345}
	var want []string
	for i, n := range sizes {
		key := fmt.Sprintf("k%d.bin", i)
		data := Content(n, byte(i))
		mustPut(t, s, key, data)
		Has(t, s, key, data)
		want = append(want, key)
	}
	keys, err := s.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(keys)
	if !slices.Equal(keys, want) {
		t.Errorf("List = %v, want %v", keys, want)
	}
	for _, k := range want {
		if err := s.Delete(ctx, k); err != nil {
			t.Fatal(err)
		}
		Absent(t, s, k)
	}
	su.noPartial(t, s, "round trips")
}

func (su Suite) overwrite(t *testing.T, s blob.Store) {
	for _, n := range []int{100, su.Big + 1} {
		a, b := Content(n, 1), Content(n/2+7, 2)
		mustPut(t, s, "same", a)
		mustPut(t, s, "same", b)
		Has(t, s, "same", b)
	}
}

func (su Suite) tooLarge(t *testing.T, s blob.Store) {
	for _, tc := range []struct {
		name      string
		n, limit  int
		wantFails bool
	}{
		{"small at the limit", 100, 100, false},
		{"small over", 101, 100, true},
		{"big at the limit", su.Big + 3, su.Big + 3, false},
		{"big over by one", su.Big + 4, su.Big + 3, true},
		{"big over the small limit", su.Big, 1000, true},
		{"anything over zero", 1, 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			data := Content(tc.n, 9)
			_, err := s.Put(ctx, "limited", bytes.NewReader(data), int64(tc.limit))
			if !tc.wantFails {
				if err != nil {
					t.Fatalf("Put %d bytes, limit %d: %v", tc.n, tc.limit, err)
				}
				Has(t, s, "limited", data)
				if err := s.Delete(ctx, "limited"); err != nil {
					t.Fatal(err)
				}
				return
			}
			if !errors.Is(err, blob.ErrTooLarge) {
				t.Fatalf("Put %d bytes, limit %d: %v, want ErrTooLarge", tc.n, tc.limit, err)
			}
			Absent(t, s, "limited")
			su.noPartial(t, s, "a too large Put")
		})
	}
}

func (su Suite) invalidKeys(t *testing.T, s blob.Store) {
	for _, key := range []string{"", "../x", "a/b", "/abs", ".hidden", "-dash", "k\x00", "sp ace", "é", strings.Repeat("a", blob.MaxKeyLen+1)} {
		if _, err := s.Put(ctx, key, strings.NewReader("x"), 10); err == nil {
			t.Errorf("Put %q was accepted", key)
		}
		if _, err := s.Open(ctx, key); err == nil || errors.Is(err, blob.ErrNotFound) {
			t.Errorf("Open %q: %v, want an invalid key error", key, err)
		}
		if err := s.Delete(ctx, key); err == nil {
			t.Errorf("Delete %q was accepted", key)
		}
	}
	long := strings.Repeat("a", blob.MaxKeyLen)
	mustPut(t, s, long, []byte("x"))
	Has(t, s, long, []byte("x"))
	if keys, _ := s.List(ctx); !slices.Equal(keys, []string{long}) {
		t.Errorf("List = %v", keys)
	}
}

func (su Suite) verified(t *testing.T, s blob.Store) {
	for _, n := range []int{10, su.Big + 5} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			old := Content(64, 3)
			mustPut(t, s, "kept", old)
			data := Content(n, 4)
			wrong := sha256.Sum256(append(slices.Clone(data), 0))
			_, err := blob.PutVerified(ctx, s, "kept", bytes.NewReader(data), int64(n), wrong)
			var de *blob.DigestError
			if !errors.Is(err, blob.ErrDigestMismatch) || !errors.As(err, &de) || de.Got != sha256.Sum256(data) || de.Want != wrong {
				t.Fatalf("PutVerified with a wrong digest: %v", err)
			}
			if _, ok := s.(blob.Verifier); ok {
				// Checked before it became visible: the old blob stays.
				Has(t, s, "kept", old)
			}
			fresh := fmt.Sprintf("fresh%d", n)
			_, err = blob.PutVerified(ctx, s, fresh, bytes.NewReader(data), int64(n), wrong)
			if !errors.Is(err, blob.ErrDigestMismatch) {
				t.Fatalf("PutVerified with a wrong digest: %v", err)
			}
			Absent(t, s, fresh)
			su.noPartial(t, s, "a mismatching PutVerified")
			info, err := blob.PutVerified(ctx, s, fresh, bytes.NewReader(data), int64(n), sha256.Sum256(data))
			if err != nil || info.Size != int64(n) {
				t.Fatalf("PutVerified with the right digest: %+v, %v", info, err)
			}
			Has(t, s, fresh, data)
		})
	}
}

// failingReader returns n bytes of content, then err.
type failingReader struct {
	r   io.Reader
	err error
}

func (f *failingReader) Read(p []byte) (int, error) {
	n, err := f.r.Read(p)
	if err == io.EOF {
		return n, f.err
	}
	return n, err
}

var errBroken = errors.New("the client's connection broke")

func (su Suite) readerFails(t *testing.T, s blob.Store) {
	for _, n := range []int{10, su.Big + 5} {
		r := &failingReader{r: bytes.NewReader(Content(n, 5)), err: errBroken}
		_, err := s.Put(ctx, "broken", r, int64(2*su.Big))
		if !errors.Is(err, errBroken) {
			t.Fatalf("Put of %d bytes from a failing reader: %v, want the reader's error", n, err)
		}
		Absent(t, s, "broken")
		su.noPartial(t, s, "a failing reader")
	}
}

func (su Suite) canceled(t *testing.T, s blob.Store) {
	cctx, cancel := context.WithCancel(ctx)
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		_, err := s.Put(cctx, "canceled", pr, int64(4*su.Big))
		done <- err
	}()
	// More than a part, so that a multipart upload is under way.
	if _, err := pw.Write(Content(su.Big+1, 6)); err != nil {
		t.Fatal(err)
	}
	cancel()
	// The store stops at its next read.
	go pw.Write(Content(1<<20, 7))
	var err error
	select {
	case err = <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("Put did not return within 30s of its context's end")
	}
	pw.CloseWithError(errBroken)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Put after its context ended: %v, want context.Canceled", err)
	}
	Absent(t, s, "canceled")
	su.noPartial(t, s, "a canceled Put")
}

func (su Suite) concurrent(t *testing.T, s blob.Store) {
	var wg sync.WaitGroup
	errs := make(chan error, 6)
	for i := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n := 1000
			if i%2 == 0 {
				n = su.Big + i
			}
			data := Content(n, byte(10+i))
			if _, err := s.Put(ctx, fmt.Sprintf("c%d", i), bytes.NewReader(data), int64(n)); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	for i := range 6 {
		n := 1000
		if i%2 == 0 {
			n = su.Big + i
		}
		Has(t, s, fmt.Sprintf("c%d", i), Content(n, byte(10+i)))
	}
}

// sweepSparesInFlight: a sweep during an upload does not break it.
func (su Suite) sweepSparesInFlight(t *testing.T, s blob.Store) {
	sw, ok := s.(blob.Sweeper)
	if !ok {
		t.Skip("the store keeps no partial uploads (no Sweep)")
	}
	data := Content(2*su.Big+17, 8)
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		_, err := s.Put(ctx, "inflight", pr, int64(len(data)))
		done <- err
	}()
	half := su.Big + 1
	if _, err := pw.Write(data[:half]); err != nil {
		t.Fatal(err)
	}
	// Parts are under way once the store reads past the first part.
	if _, err := pw.Write(data[half : half+1]); err != nil {
		t.Fatal(err)
	}
	if _, _, err := sw.Sweep(ctx); err != nil {
		t.Fatalf("Sweep: %v", err)
	}
	if _, err := pw.Write(data[half+1:]); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	if err := <-done; err != nil {
		t.Fatalf("the upload in flight failed after a sweep: %v", err)
	}
	Has(t, s, "inflight", data)
	su.noPartial(t, s, "the upload")
}
