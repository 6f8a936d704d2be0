package main

import (
	"fmt"
	"image/color"
	"math"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/font"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
)

// A size sweep is a family of benchmarks named <Family>/<mode>/<size>, size being
// like 256B, 1KiB, 64KiB or 1MiB.
var (
	sweepName = regexp.MustCompile(`^([^/]+)/([^/]+)/([0-9]+)(B|KiB|MiB|GiB)$`)
	sizeShift = map[string]uint{"B": 0, "KiB": 10, "MiB": 20, "GiB": 30}
)

// Sweep is one size-sweep family of one package.
type Sweep struct {
	Pkg, Family string
	Modes       []string // in the order first seen
	Sizes       []int64  // ascending
	Points      map[string]map[int64]*Bench
	File        string // charts are File+"-msgs.svg" and File+"-ratio.svg"
}

// FindSweeps finds the size-sweep families with at least two sizes.
func FindSweeps(bs []*Bench) []*Sweep {
	var out []*Sweep
	index := map[[2]string]*Sweep{}
	for _, b := range bs {
		m := sweepName.FindStringSubmatch(b.Name)
		if m == nil {
			continue
		}
		n, err := strconv.ParseInt(m[3], 10, 64)
		if err != nil {
			continue
		}
		size := n << sizeShift[m[4]]
		k := [2]string{b.Pkg, m[1]}
		s := index[k]
		if s == nil {
			s = &Sweep{Pkg: b.Pkg, Family: m[1], Points: map[string]map[int64]*Bench{}}
			index[k] = s
			out = append(out, s)
		}
		if s.Points[m[2]] == nil {
			s.Modes = append(s.Modes, m[2])
			s.Points[m[2]] = map[int64]*Bench{}
		}
		s.Points[m[2]][size] = b
		if !slices.Contains(s.Sizes, size) {
			s.Sizes = append(s.Sizes, size)
		}
	}
	out = slices.DeleteFunc(out, func(s *Sweep) bool { return len(s.Sizes) < 2 })
	families := map[string]int{}
	for _, s := range out {
		slices.Sort(s.Sizes)
		families[s.Family]++
	}
	for _, s := range out {
		s.File = s.Family
		if families[s.Family] > 1 { // the same family in two packages
			s.File = path.Base(s.Pkg) + "-" + s.Family
		}
	}
	return out
}

// Chart is one SVG written by DrawCharts.
type Chart struct {
	Sweep *Sweep
	File  string // base name, in the charts directory
	Alt   string
}

const (
	chartW = 7 * vg.Inch
	chartH = 4.5 * vg.Inch
)

// DrawCharts writes <file>-msgs.svg (if the family reports msgs/s) and
// <file>-ratio.svg (if it reports ratio-* units) for each sweep into dir.
// machine describes where the figures come from, for the titles.
func DrawCharts(sweeps []*Sweep, dir, machine string, short func(string) string) ([]Chart, error) {
	plot.DefaultFont = font.Font{Typeface: "Liberation", Variant: "Sans"}
	var charts []Chart
	kinds := []struct {
		suffix, alt string
		draw        func(s *Sweep, name, machine string) (*plot.Plot, bool, error)
	}{
		{"-msgs.svg", ": msgs/s by message size", msgsChart},
		{"-ratio.svg", ": ratios by message size", ratioChart},
	}
	for _, s := range sweeps {
		name := fmt.Sprintf("%s (%s)", s.Family, short(s.Pkg))
		for _, k := range kinds {
			p, ok, err := k.draw(s, name, machine)
			if err != nil {
				return nil, err
			}
			if !ok {
				continue
			}
			c := Chart{Sweep: s, File: s.File + k.suffix, Alt: name + k.alt}
			if err := p.Save(chartW, chartH, filepath.Join(dir, c.File)); err != nil {
				return nil, err
			}
			charts = append(charts, c)
		}
	}
	return charts, nil
}

// series returns the (size, median) points of mode in unit; log drops values <= 0.
func (s *Sweep) series(mode, unit string, log bool) plotter.XYs {
	var xys plotter.XYs
	for _, size := range s.Sizes {
		b := s.Points[mode][size]
		if b == nil {
			continue
		}
		if v, ok := b.Median(unit); ok && (!log || v > 0) {
			xys = append(xys, plotter.XY{X: float64(size), Y: v})
		}
	}
	return xys
}

// sizeAxis makes x a log axis of message sizes, ticked at the sizes measured.
func (s *Sweep) sizeAxis(p *plot.Plot) {
	p.X.Label.Text = "message size (log scale)"
	p.X.Scale = plot.LogScale{}
	var ticks plot.ConstantTicks
	for _, size := range s.Sizes {
		ticks = append(ticks, plot.Tick{Value: float64(size), Label: sizeLabel(size)})
	}
	p.X.Tick.Marker = ticks
	p.X.Min, p.X.Max = float64(s.Sizes[0])/1.4, float64(s.Sizes[len(s.Sizes)-1])*1.4
}

func msgsChart(s *Sweep, name, machine string) (*plot.Plot, bool, error) {
	p := plot.New()
	p.Title.Text = fmt.Sprintf("%s: messages per second by message size\n(median; %s)", name, machine)
	p.Y.Label.Text = "msgs/s (log scale)"
	var lines []any
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, mode := range s.Modes {
		xys := s.series(mode, "msgs/s", true)
		if len(xys) == 0 {
			continue
		}
		for _, xy := range xys {
			lo, hi = math.Min(lo, xy.Y), math.Max(hi, xy.Y)
		}
		lines = append(lines, mode, xys)
	}
	if len(lines) == 0 {
		return nil, false, nil
	}
	p.Add(plotter.NewGrid())
	if err := addLines(p, lines...); err != nil {
		return nil, false, err
	}
	s.sizeAxis(p)
	p.Y.Scale = plot.LogScale{}
	p.Y.Tick.Marker = rateTicks{}
	// Whole decades, so that the axis always has labelled ticks.
	p.Y.Min, p.Y.Max = math.Pow10(int(math.Floor(math.Log10(lo)))), math.Pow10(int(math.Ceil(math.Log10(hi))))
	if p.Y.Min == p.Y.Max {
		p.Y.Max *= 10
	}
	p.Legend.Left, p.Legend.Top = true, false // rates fall with size: bottom left is free
	p.Legend.TextStyle.Font.Size = vg.Points(10)
	return p, true, nil
}

func ratioChart(s *Sweep, name, machine string) (*plot.Plot, bool, error) {
	p := plot.New()
	p.Title.Text = fmt.Sprintf("%s: same-run ratios by message size (1.0 = parity)\n(median; %s)", name, machine)
	p.Y.Label.Text = "ratio"
	var lines []any
	hi := 1.0
	for _, mode := range s.Modes {
		var units []string
		for _, size := range s.Sizes {
			if b := s.Points[mode][size]; b != nil {
				for _, u := range b.Units {
					if strings.HasPrefix(u, "ratio-") && !slices.Contains(units, u) {
						units = append(units, u)
					}
				}
			}
		}
		for _, u := range units {
			xys := s.series(mode, u, false)
			for _, xy := range xys {
				hi = math.Max(hi, xy.Y)
			}
			lines = append(lines, mode+": "+u, xys)
		}
	}
	if len(lines) == 0 {
		return nil, false, nil
	}
	p.Add(plotter.NewGrid())
	if err := addLines(p, lines...); err != nil {
		return nil, false, err
	}
	s.sizeAxis(p)
	// The legend goes top right, above the highest line: leave it its rows' share of
	// the plot's height (about 250 pt at chartH).
	entries := len(lines)/2 + 1
	free := math.Min(0.6, float64(entries*13+16)/250)
	p.Y.Min, p.Y.Max = 0, hi*1.05/(1-free)
	p.Legend.Top, p.Legend.YOffs = true, -vg.Points(4)
	p.Legend.TextStyle.Font.Size = vg.Points(10)
	ref, err := plotter.NewLine(plotter.XYs{{X: p.X.Min, Y: 1}, {X: p.X.Max, Y: 1}})
	if err != nil {
		return nil, false, err
	}
	ref.Dashes = []vg.Length{vg.Points(6), vg.Points(4)}
	ref.Color = color.Gray{Y: 0x50}
	p.Add(ref)
	p.Legend.Add("1.0 (parity)", ref)
	return p, true, nil
}

// addLines adds name, points, name, points, ... as solid lines with points, each in
// the next color and glyph shape of plotutil's palettes (solid, unlike
// plotutil.AddLinePoints, so that only the reference line is dashed).
func addLines(p *plot.Plot, vs ...any) error {
	for i := 0; i+1 < len(vs); i += 2 {
		l, pts, err := plotter.NewLinePoints(vs[i+1].(plotter.XYs))
		if err != nil {
			return err
		}
		n := i / 2
		l.Color, l.Width = plotutil.Color(n), vg.Points(1.5)
		pts.Color, pts.Shape, pts.Radius = plotutil.Color(n), plotutil.Shape(n), vg.Points(3)
		p.Add(l, pts)
		p.Legend.Add(vs[i].(string), l, pts)
	}
	return nil
}

// rateTicks labels a log axis of rates at powers of ten (and at 2 and 5 times them
// when the axis spans two decades or less) as 1k, 20k, 1M, ...
type rateTicks struct{}

func (rateTicks) Ticks(lo, hi float64) []plot.Tick {
	var ticks []plot.Tick
	few := hi/lo <= 100*1.0001
	for _, t := range (plot.LogTicks{}).Ticks(lo, hi) {
		if len(ticks) > 0 && ticks[len(ticks)-1].Value == t.Value {
			continue // LogTicks gives each power of ten twice
		}
		v := t.Value
		m := math.Round(v / math.Pow10(int(math.Floor(math.Log10(v)+1e-9))))
		t.Label = ""
		if m == 1 || (few && (m == 2 || m == 5)) {
			t.Label = tickLabel(v)
		}
		ticks = append(ticks, t)
	}
	return ticks
}

// tickLabel is siFormat without trailing zeros: 1M, 20k, 500.
func tickLabel(v float64) string {
	s := siFormat(v)
	num := strings.TrimRight(s, "kMG")
	if strings.Contains(num, ".") {
		num = strings.TrimSuffix(strings.TrimRight(num, "0"), ".")
	}
	return num + s[len(strings.TrimRight(s, "kMG")):]
}

// sizeLabel writes a size in bytes as 256 B, 1 KiB, 64 KiB, 1 MiB.
func sizeLabel(n int64) string {
	for _, u := range []struct {
		name  string
		shift uint
	}{{"GiB", 30}, {"MiB", 20}, {"KiB", 10}} {
		if n >= 1<<u.shift && n%(1<<u.shift) == 0 {
			return fmt.Sprintf("%d %s", n>>u.shift, u.name)
		}
	}
	return fmt.Sprintf("%d B", n)
}
