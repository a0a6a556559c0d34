package main

import (
	"flag"
	"io"
	"log/slog"
)

// logFlags adds the long-running commands' log flags to fs, -log-json and
// -log-level; the function it returns makes, once fs is parsed, the logger
// they ask for, writing to w.
func logFlags(fs *flag.FlagSet) func(w io.Writer) *slog.Logger {
	asJSON := fs.Bool("log-json", false, "write logs as JSON lines")
	var level slog.Level
	fs.TextVar(&level, "log-level", slog.LevelInfo, "least severe log level: debug, info, warn or error")
	return func(w io.Writer) *slog.Logger {
		opts := &slog.HandlerOptions{Level: level}
		if *asJSON {
			return slog.New(slog.NewJSONHandler(w, opts))
		}
		return slog.New(slog.NewTextHandler(w, opts))
	}
}
