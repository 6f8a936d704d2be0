package main

import (
	"math"
	"strconv"
	"strings"
)

// formatValue writes a metric for the tables: below 1000, 3 significant digits
// (0.861, 12, 362); from 1000 up, rates (units ending in /s, but not B/s) as 353k,
// 1.23M, and everything else (ns/op, B/op, MB/s, ...) as an integer with thousands
// separators.
func formatValue(unit string, v float64) string {
	switch {
	case math.IsNaN(v) || math.IsInf(v, 0):
		return strconv.FormatFloat(v, 'g', -1, 64)
	case math.Abs(roundSig(v, 3)) < 1000:
		return sig3(v)
	case strings.HasSuffix(unit, "/s") && !strings.HasSuffix(unit, "B/s"):
		return siFormat(v)
	default:
		return thousands(math.Round(v))
	}
}

func roundSig(v float64, n int) float64 {
	if v == 0 {
		return 0
	}
	p := math.Pow10(n - 1 - int(math.Floor(math.Log10(math.Abs(v)))))
	return math.Round(v*p) / p
}

// sig3 writes v (|v| < 1000) with 3 significant digits, integers as they are.
func sig3(v float64) string {
	if v == math.Trunc(v) {
		return strconv.FormatFloat(v, 'f', 0, 64)
	}
	return sigFixed(v)
}

// sigFixed writes v (|v| < 1000) with 3 significant digits: 1.00, 0.0200, 20.5.
func sigFixed(v float64) string {
	if v == 0 {
		return "0"
	}
	r := roundSig(v, 3)
	decimals := max(0, 2-int(math.Floor(math.Log10(math.Abs(r)))))
	return strconv.FormatFloat(r, 'f', decimals, 64)
}

// siFormat writes v with 3 significant digits and a k, M or G suffix: 353k, 20.5k.
func siFormat(v float64) string {
	for _, p := range []struct {
		suffix string
		scale  float64
	}{{"G", 1e9}, {"M", 1e6}, {"k", 1e3}} {
		if math.Abs(roundSig(v, 3)) >= p.scale {
			return sigFixed(roundSig(v, 3)/p.scale) + p.suffix
		}
	}
	return sig3(v)
}

// thousands writes an integral v with comma separators: 1,234,567.
func thousands(v float64) string {
	s := strconv.FormatFloat(math.Abs(v), 'f', 0, 64)
	var b strings.Builder
	if v < 0 {
		b.WriteByte('-')
	}
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}
