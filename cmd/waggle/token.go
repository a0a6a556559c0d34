package main

import (
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"

	"github.com/wagglevm/waggle/internal/httpkit"
)

// readAuthToken reads the token of --auth-token-file, if one was given,
// before anything listens: a bad file fails the command at once.
func readAuthToken(file string) (string, error) {
	if file == "" {
		return "", nil
	}
	token, err := httpkit.ReadTokenFile(file)
	if err != nil {
		return "", fmt.Errorf("--auth-token-file: %w", err)
	}
	return token, nil
}

// servingToken returns the bearer token a server command serves with on ln,
// and the file that holds it. With no --auth-token-file (token empty), it
// makes a token and writes it at httpkit.DefaultTokenPath of the address ln
// is bound to (so that a listener on port 0 writes where a client of its
// real port looks); done removes that file at exit. A server that other
// hosts can reach with a generated token prints a WARNING a person sees.
func servingToken(log *slog.Logger, stderr io.Writer, ln net.Listener, file, token string) (_, path string, done func(), err error) {
	done = func() {}
	if token != "" {
		return token, file, done, nil
	}
	addr := ln.Addr().String()
	if path, err = httpkit.DefaultTokenPath(addr); err != nil {
		return "", "", done, fmt.Errorf("no --auth-token-file, and no place for a generated token: %w", err)
	}
	if token, err = httpkit.GenerateToken(); err != nil {
		return "", "", done, err
	}
	if err := httpkit.WriteTokenFile(path, token); err != nil {
		return "", "", done, fmt.Errorf("no --auth-token-file, and the generated token could not be saved: %w", err)
	}
	log.Info("generated an auth token", "token_file", path)
	if !httpkit.IsLoopback(ln.Addr()) {
		fmt.Fprintf(stderr, "WARNING: listening on %s, which other hosts can reach, with a generated token (in %s). "+
			"Give --auth-token-file to choose the token the clients of this server hold, or listen on 127.0.0.1.\n", addr, path)
	}
	return token, path, func() { removeTokenFile(log, path, token) }, nil
}

// removeTokenFile removes a generated token file at exit, if it still holds
// the token this process made (another server may have replaced it).
func removeTokenFile(log *slog.Logger, path, token string) {
	if got, err := httpkit.ReadTokenFile(path); err != nil || got != token {
		return
	}
	if err := os.Remove(path); err != nil {
		log.Warn("remove the generated token file", "token_file", path, "err", err)
	}
}
