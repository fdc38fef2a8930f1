package s3_test

import (
	"bytes"
	"strconv"
	"testing"

	"github.com/mse-in-go/mse/internal/backend/blob"
	"github.com/mse-in-go/mse/internal/backend/blob/blobtest"
	"github.com/mse-in-go/mse/internal/backend/blob/fs"
	"github.com/mse-in-go/mse/internal/backend/blob/s3"
	"github.com/mse-in-go/mse/internal/testenv"
)

// BenchmarkPut64MiB: upload throughput of a 64 MiB bundle, into S3
// (versitygw on loopback, its posix backend on the same disk) and into
// blob/fs, both streaming from a reader.
func BenchmarkPut64MiB(b *testing.B) {
	data := blobtest.Content(64<<20, 1)
	run := func(b *testing.B, s blob.Store) {
		b.SetBytes(int64(len(data)))
		b.ReportAllocs()
		for b.Loop() {
			if _, err := s.Put(ctx, "bench", bytes.NewReader(data), int64(len(data))); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.Run("fs", func(b *testing.B) {
		s, err := fs.New(b.TempDir())
		if err != nil {
			b.Fatal(err)
		}
		run(b, s)
	})
	srv := testenv.S3(b)
	for _, ps := range []int64{s3.MinPartSize, s3.DefaultPartSize} {
		b.Run("s3/part="+strconv.FormatInt(ps>>20, 10)+"MiB", func(b *testing.B) {
			cfg := config(srv, "")
			cfg.PartSize = ps
			s, err := s3.New(ctx, cfg)
			if err != nil {
				b.Fatal(err)
			}
			run(b, s)
		})
	}
}
