package service

import (
	"context"
	"errors"

	"github.com/mse-in-go/mse/internal/backend/store"
)

// Page sizes of ListAppsPage.
const (
	DefaultPageSize = 100
	MaxPageSize     = 500
)

// ListQuery selects a page of the caller's apps.
type ListQuery struct {
	Name, Status, Project string
	All                   bool
	// Limit is the page size (0: DefaultPageSize; at most MaxPageSize).
	Limit int
	// Cursor is the Next of the previous page ("" for the first).
	Cursor string
}

// ListAppsPage returns one page of the caller's apps, newest first, and the
// cursor of the next page ("" after the last).
func (s *Service) ListAppsPage(ctx context.Context, u *store.User, q ListQuery) (apps []store.App, next string, err error) {
	if q.Limit == 0 {
		q.Limit = DefaultPageSize
	}
	if q.Limit < 1 || q.Limit > MaxPageSize {
		return nil, "", errf(ErrInvalid, "limit must be from 1 to %d", MaxPageSize)
	}
	f, err := s.appFilter(ctx, u, q.Name, q.Status, q.Project, q.All)
	if err != nil {
		return nil, "", err
	}
	if q.Cursor != "" {
		// A cursor is one of the caller's app ids; any other is refused
		// alike, so that a cursor tells nothing of other tenants.
		a, err := s.st.GetApp(ctx, q.Cursor)
		if errors.Is(err, store.ErrNotFound) || (err == nil && a.OwnerID != u.ID) {
			return nil, "", errf(ErrInvalid, "unknown cursor %q: start again without one", q.Cursor)
		}
		if err != nil {
			return nil, "", err
		}
		f.After = q.Cursor
	}
	f.Limit = q.Limit + 1 // one more tells whether a next page exists
	apps, err = s.st.ListApps(ctx, f)
	if err != nil {
		return nil, "", err
	}
	if len(apps) > q.Limit {
		apps = apps[:q.Limit]
		next = apps[q.Limit-1].ID
	}
	return apps, next, nil
}
