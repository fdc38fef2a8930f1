// Command go-hello is the go-hello example app of MSE: a plain HTTP server.
//
// Inside MSE the node runs it in its code directory (MODULE_PATH) and tells it
// the loopback port to listen on in PORT; app secrets, if any, are in the JSON
// file named by SECRETS_PATH. The node terminates TLS in front of it.
package main

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		secrets := "absent"
		if p := os.Getenv("SECRETS_PATH"); p != "" {
			if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() {
				secrets = "present" // never show their content
			}
		}
		w.Header().Set("X-App-Secrets", secrets)
		fmt.Fprintln(w, "Hello from Go!")
	})
	mux.HandleFunc("GET /health", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprint(w, "OK")
	})
	return mux
}

func main() {
	port := os.Getenv("PORT")
	if port == "" {
		port = "8080"
	}
	srv := &http.Server{
		Addr:              net.JoinHostPort("127.0.0.1", port),
		Handler:           handler(),
		ReadHeaderTimeout: 10 * time.Second,
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(shutdown)
	}()
	log.Printf("go-hello listening on http://%s", srv.Addr)
	if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
		log.Fatal(err)
	}
}
