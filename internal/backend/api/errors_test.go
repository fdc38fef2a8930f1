package api

import (
	"errors"
	"fmt"
	"net/http"
	"testing"

	"github.com/mse-in-go/mse/internal/backend/service"
)

// TestEveryKindMapped: each sentinel of the service has its status here; an
// unknown error is a 500 whose message says nothing of it.
func TestEveryKindMapped(t *testing.T) {
	for _, k := range service.Kinds {
		err := fmt.Errorf("create the app: %w", fmt.Errorf("%w: what failed; what to do", k))
		code, msg, ok := statusAndMessage(err)
		if !ok || code < 400 || code >= 600 || code == 500 {
			t.Errorf("%v: HTTP %d ok=%v", k, code, ok)
		}
		if k != service.ErrOutOfStorage && msg != "create the app: "+k.Error()+": what failed; what to do" && msg != "what failed; what to do" {
			t.Errorf("%v: message %q", k, msg)
		}
	}
	if code, msg, _ := statusAndMessage(fmt.Errorf("%w: /data/blobs: no space", service.ErrOutOfStorage)); code != http.StatusInsufficientStorage || msg != "the operator is out of storage; try again later or ask the operator" {
		t.Errorf("out of storage: %d %q", code, msg)
	}
	if code, msg, ok := statusAndMessage(errors.New("db: secret detail")); code != 500 || ok || msg != "internal error; the operator's logs have the details" {
		t.Errorf("internal: %d %q %v", code, msg, ok)
	}
}
