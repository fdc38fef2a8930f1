package cli

import (
	"io/fs"
	"path/filepath"

	"github.com/vbauerster/mpb/v8"
	"github.com/vbauerster/mpb/v8/decor"
)

// progress shows one bar on a terminal; elsewhere it does nothing (the step
// lines say what happened).
type progress struct {
	p   *mpb.Progress
	bar *mpb.Bar
}

func (u *ui) progress(name string, total int64) *progress {
	if !u.tty {
		return &progress{}
	}
	p := mpb.New(mpb.WithOutput(u.err), mpb.WithWidth(40))
	bar := p.AddBar(total,
		mpb.PrependDecorators(decor.Name(name, decor.WC{W: len(name) + 1, C: decor.DindentRight}), decor.CountersKibiByte("% .1f / % .1f")),
		mpb.AppendDecorators(decor.Percentage(decor.WC{W: 5}), decor.Name(" "), decor.AverageSpeed(decor.SizeB1024(0), "% .1f")),
	)
	return &progress{p: p, bar: bar}
}

// set reports n bytes done.
func (pr *progress) set(n int64) {
	if pr.bar != nil {
		pr.bar.SetCurrent(n)
	}
}

// done completes the bar at n bytes and waits for it to render.
func (pr *progress) done(n int64) {
	if pr.bar == nil {
		return
	}
	pr.bar.SetTotal(n, true)
	pr.p.Wait()
}

// treeSize estimates the bytes to package (ignore rules are not applied).
func treeSize(dir string) int64 {
	var n int64
	_ = filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			if info, err := d.Info(); err == nil {
				n += info.Size()
			}
		}
		return nil
	})
	return n
}
