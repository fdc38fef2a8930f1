package cli

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/mse-in-go/mse/internal/client"
)

// waitStatus polls an app until it reaches one of want. A failed poll (the
// backend restarting, a network blip) is retried with backoff and jitter
// until ctx ends; only a final status (on_error, stopped) or ctx ends the
// wait. On a terminal it shows a spinner with the elapsed time and the
// `mse cloud logs` hint.
func waitStatus(ctx context.Context, u *ui, c *client.Client, id, label string, want ...string) (*client.App, error) {
	start := time.Now()
	spin := u.spinner(label, id)
	defer spin.stop()
	delay := 20 * time.Millisecond
	var lastErr error
	for {
		a, err := c.App(ctx, id)
		if err == nil {
			lastErr = nil
			for _, w := range want {
				if a.Status == w {
					return a, nil
				}
			}
			if a.Status == "on_error" || a.Status == "stopped" {
				return a, fmt.Errorf("app %s is %s: %s", id, a.Status, sanitize(a.Error))
			}
			// Answered: poll fast while a start is quick (most are), then
			// more slowly for long ones (a model to load).
			delay = 20 * time.Millisecond
			if el := time.Since(start); el > 10*time.Second {
				delay = 250 * time.Millisecond
			} else if el > 2*time.Second {
				delay = 100 * time.Millisecond
			}
		} else {
			var ae *client.APIError
			if errors.As(err, &ae) && ae.Status >= 400 && ae.Status < 500 && ae.Status != 429 {
				return nil, err // not transient
			}
			lastErr = err
			delay = min(delay*2, 5*time.Second)
		}
		d := delay/2 + rand.N(delay/2+1)
		select {
		case <-ctx.Done():
			if lastErr != nil {
				return nil, fmt.Errorf("app %s: the backend did not answer for %s: %v", id, time.Since(start).Round(time.Second), lastErr)
			}
			return a, fmt.Errorf("app %s is still %s after %s: %w", id, a.Status, time.Since(start).Round(time.Second), ctx.Err())
		case <-time.After(d):
		}
	}
}

// spinner shows "label (12s; logs: mse cloud logs ID)" on a terminal.
type spinner struct {
	done chan struct{}
	exit chan struct{}
}

func (u *ui) spinner(label, id string) *spinner {
	s := &spinner{done: make(chan struct{}), exit: make(chan struct{})}
	if !u.tty {
		close(s.exit)
		return s
	}
	go func() {
		defer close(s.exit)
		frames := []string{"⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏"}
		start := time.Now()
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for i := 0; ; i++ {
			select {
			case <-s.done:
				fmt.Fprint(u.err, "\r\033[K")
				return
			case <-t.C:
				if time.Since(start) < 500*time.Millisecond {
					continue // fast steps show no spinner
				}
				fmt.Fprintf(u.err, "\r\033[K%s %s (%s; logs: mse cloud logs %s)", frames[i%len(frames)], label, time.Since(start).Round(time.Second), id)
			}
		}
	}()
	return s
}

func (s *spinner) stop() {
	select {
	case <-s.done:
	default:
		close(s.done)
	}
	<-s.exit
}

// lastLogLines returns the app's last n log lines, sanitized for a terminal.
func lastLogLines(ctx context.Context, c *client.Client, id string, n int) []string {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	rc, err := c.Logs(ctx, id, 16, false)
	if err != nil {
		return nil
	}
	defer rc.Close()
	var lines []string
	sc := bufio.NewScanner(io.LimitReader(rc, 64<<10))
	sc.Buffer(make([]byte, 0, 4096), 64<<10)
	for sc.Scan() {
		if l := strings.TrimRight(sc.Text(), "\r"); l != "" {
			lines = append(lines, sanitize(l))
		}
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return lines
}
