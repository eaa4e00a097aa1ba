package bgp

import (
	"context"
	"fmt"
	"log/slog"
	"sort"
	"sync/atomic"

	gobgplog "github.com/osrg/gobgp/v3/pkg/log"
)

// slogAdapter makes GoBGP log through log/slog instead of logrus.
type slogAdapter struct {
	l     *slog.Logger
	level atomic.Uint32 // a gobgplog.LogLevel
}

var _ gobgplog.Logger = (*slogAdapter)(nil)

func newSlogAdapter(l *slog.Logger) *slogAdapter {
	a := &slogAdapter{l: l.With("component", "gobgp")}
	a.level.Store(uint32(gobgplog.InfoLevel))
	return a
}

func (a *slogAdapter) log(lv gobgplog.LogLevel, sl slog.Level, msg string, fields gobgplog.Fields) {
	if lv > gobgplog.LogLevel(a.level.Load()) {
		return
	}
	keys := make([]string, 0, len(fields))
	for k := range fields {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	attrs := make([]slog.Attr, 0, len(keys))
	for _, k := range keys {
		v := fields[k]
		if err, ok := v.(error); ok {
			v = err.Error()
		}
		attrs = append(attrs, slog.Any(k, v))
	}
	a.l.LogAttrs(context.Background(), sl, msg, attrs...)
}

// Panic logs and panics, as GoBGP expects of it.
func (a *slogAdapter) Panic(msg string, fields gobgplog.Fields) {
	a.log(gobgplog.PanicLevel, slog.LevelError, msg, fields)
	panic(fmt.Sprintf("gobgp: %s %v", msg, fields))
}

// Fatal logs and panics: a library must not exit the process, but GoBGP
// expects Fatal not to return.
func (a *slogAdapter) Fatal(msg string, fields gobgplog.Fields) {
	a.log(gobgplog.FatalLevel, slog.LevelError, msg, fields)
	panic(fmt.Sprintf("gobgp fatal: %s %v", msg, fields))
}

func (a *slogAdapter) Error(msg string, fields gobgplog.Fields) {
	a.log(gobgplog.ErrorLevel, slog.LevelError, msg, fields)
}

func (a *slogAdapter) Warn(msg string, fields gobgplog.Fields) {
	a.log(gobgplog.WarnLevel, slog.LevelWarn, msg, fields)
}

func (a *slogAdapter) Info(msg string, fields gobgplog.Fields) {
	a.log(gobgplog.InfoLevel, slog.LevelInfo, msg, fields)
}

func (a *slogAdapter) Debug(msg string, fields gobgplog.Fields) {
	a.log(gobgplog.DebugLevel, slog.LevelDebug, msg, fields)
}

func (a *slogAdapter) SetLevel(level gobgplog.LogLevel) { a.level.Store(uint32(level)) }

func (a *slogAdapter) GetLevel() gobgplog.LogLevel { return gobgplog.LogLevel(a.level.Load()) }
