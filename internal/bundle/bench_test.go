package bundle

import (
	"bytes"
	"io"
	"testing"
)

func reportGBs(b *testing.B, n int64) {
	b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GB/s")
}

func BenchmarkEncrypt(b *testing.B) {
	pt := randomBytes(16<<20, 1)
	key := testKey(1)
	b.SetBytes(int64(len(pt)))
	b.ReportAllocs()
	for b.Loop() {
		w, err := Encrypt(io.Discard, key)
		if err != nil {
			b.Fatal(err)
		}
		w.Write(pt)
		if err := w.Close(); err != nil {
			b.Fatal(err)
		}
	}
	reportGBs(b, int64(len(pt)))
}

func BenchmarkDecrypt(b *testing.B) {
	pt := randomBytes(16<<20, 1)
	key := testKey(1)
	ct := encryptBytes(b, key, pt, DefaultSegmentSize)
	b.SetBytes(int64(len(pt)))
	b.ReportAllocs()
	buf := make([]byte, 64<<10)
	for b.Loop() {
		r, err := Decrypt(bytes.NewReader(ct), key)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := io.CopyBuffer(io.Discard, r, buf); err != nil {
			b.Fatal(err)
		}
	}
	reportGBs(b, int64(len(pt)))
}
