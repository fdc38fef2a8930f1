package backend

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mse-in-go/mse/internal/backend/service"
	"github.com/mse-in-go/mse/internal/backend/store"
	"github.com/mse-in-go/mse/internal/backend/store/sqlite"
)

// lateStore saw no user when asked, as a replica starting at the same time
// as another on an empty database does.
type lateStore struct{ store.Store }

func (lateStore) ListUsers(context.Context) ([]store.User, error) { return nil, nil }

// Two replicas bootstrap the administrator on one empty database: the first
// writes its token file; the second, which lost the race, starts anyway and
// leaves no token file (its token would be refused).
func TestBootstrapAdminRace(t *testing.T) {
	st, err := sqlite.Open(filepath.Join(t.TempDir(), "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ctx := context.Background()
	log := slog.New(slog.DiscardHandler)
	first, second := t.TempDir(), t.TempDir()
	p1, err := bootstrapAdmin(ctx, st, first, log)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := os.ReadFile(p1)
	if err != nil {
		t.Fatal(err)
	}
	if tk, err := st.TokenByHash(ctx, service.HashToken(strings.TrimSpace(string(tok)))); err != nil || tk.RevokedAt != nil {
		t.Fatalf("the first replica's token: %+v %v", tk, err)
	}
	p2, err := bootstrapAdmin(ctx, lateStore{st}, second, log)
	if err != nil {
		t.Fatalf("the second replica: %v", err)
	}
	if p2 != "" {
		t.Errorf("the second replica names a token file, %s", p2)
	}
	if _, err := os.Stat(filepath.Join(second, AdminTokenFile)); !os.IsNotExist(err) {
		t.Errorf("the second replica left a token file that would be refused: %v", err)
	}
	users, _ := st.ListUsers(ctx)
	if len(users) != 1 {
		t.Errorf("%d users, want the one administrator", len(users))
	}
	// Restarts: the first still names its file; a replica starting later
	// on another data directory names none (it has none).
	if p, err := bootstrapAdmin(ctx, st, first, log); err != nil || p != p1 {
		t.Errorf("the first replica restarted: %q, %v; want %s", p, err, p1)
	}
	if p, err := bootstrapAdmin(ctx, st, t.TempDir(), log); err != nil || p != "" {
		t.Errorf("a replica started later names %q (%v), a file it does not have", p, err)
	}
}
