package image

import (
	"errors"
	"testing"
)

func TestParentPagesNames(t *testing.T) {
	for name, ok := range map[string]bool{
		"parent/pages-1.img":               true,
		"parent/parent/pages-shmem-7.img":  true,
		"pages-1.img":                      true, // generation 0: pre-copied
		"pages-1-pre.img":                  true,
		"task-1.json":                      false,
		"parent/../pages-1.img":            false,
		"parent/task-1.json":               false,
		"parent/sub/pages-1.img":           false,
		"/parent/pages-1.img":              false,
		"parent/parent/../../pages-1.img":  false,
		"parent//pages-1.img":              false,
		"parent/pages-1.img/../../etc.img": false,
	} {
		if got := ValidParentPagesName(name); got != ok {
			t.Errorf("ValidParentPagesName(%q) = %v, want %v", name, got, ok)
		}
	}
}

func TestIncrementalRunsValidate(t *testing.T) {
	mm := func(runs ...PageRun) *Mm {
		return &Mm{
			PagesFile: "pages-1.img", PagesSize: 2 * PageSize,
			ParentPages: []ParentPages{{Name: "parent/pages-1.img", Size: 4 * PageSize}},
			Vmas:        []Vma{{Start: 0x10000, End: 0x20000, Kind: VmaAnon, Pages: runs}},
		}
	}
	good := mm(PageRun{Addr: 0x10000, Len: 2 * PageSize, Off: 0}, PageRun{Addr: 0x12000, Len: 4 * PageSize, Off: 0, File: 1})
	if err := good.Validate(); err != nil {
		t.Fatalf("valid incremental mm: %v", err)
	}
	for name, bad := range map[string]*Mm{
		"beyond the parent file": mm(PageRun{Addr: 0x10000, Len: PageSize, Off: 4 * PageSize, File: 1}),
		"unknown file":           mm(PageRun{Addr: 0x10000, Len: PageSize, File: 2}),
		"negative file":          mm(PageRun{Addr: 0x10000, Len: PageSize, File: -1}),
	} {
		if err := bad.Validate(); !errors.Is(err, ErrFormat) {
			t.Errorf("%s: Validate = %v, want ErrFormat", name, err)
		}
	}
	own := mm()
	own.ParentPages[0].Name = "pages-1.img"
	if err := own.Validate(); !errors.Is(err, ErrFormat) {
		t.Errorf("the own pages file as a parent's: Validate = %v, want ErrFormat", err)
	}
	pre := mm(PageRun{Addr: 0x12000, Len: 4 * PageSize, Off: 0, File: 1})
	pre.ParentPages[0].Name = PreCopyPagesFile(1)
	if err := pre.Validate(); err != nil {
		t.Errorf("pre-copied pages: Validate = %v", err)
	}
	escape := mm()
	escape.ParentPages[0].Name = "parent/../../etc/pages-1.img"
	if err := escape.Validate(); !errors.Is(err, ErrFormat) {
		t.Errorf("escaping parent name: Validate = %v, want ErrFormat", err)
	}
}

func TestSplitParentPagesValidate(t *testing.T) {
	split := func() *Mm {
		return &Mm{
			PagesFile: "pages-1.img", PagesSize: 3 * PageSize,
			PagesParts: []string{"pages-1-1.img"}, PagesPartSize: 2 * PageSize,
			ParentPages: []ParentPages{{
				Name: "parent/pages-1.img", Size: 5 * PageSize,
				Parts: []string{"parent/pages-1-1.img", "parent/pages-1-2.img"}, PartSize: 2 * PageSize,
			}},
			Vmas: []Vma{{Start: 0x10000, End: 0x20000, Kind: VmaAnon, Pages: []PageRun{
				{Addr: 0x10000, Len: 3 * PageSize, Off: 0},
				{Addr: 0x13000, Len: 5 * PageSize, Off: 0, File: 1},
			}}},
		}
	}
	if err := split().Validate(); err != nil {
		t.Fatalf("valid split incremental mm: %v", err)
	}
	d, ok := split().PagesDataOf(1)
	if !ok || d.Size != 5*PageSize || d.PartSize != 2*PageSize || len(d.Files) != 3 || d.Len(2) != PageSize || d.Len(3) != 0 {
		t.Fatalf("PagesDataOf(1) = %+v, %v", d, ok)
	}
	own, _ := split().PagesDataOf(0)
	if p := own.Parent(); p.Name != "parent/pages-1.img" || len(p.Parts) != 1 || p.Parts[0] != "parent/pages-1-1.img" || p.PartSize != 2*PageSize || p.Size != 3*PageSize {
		t.Fatalf("own data as the next generation names it: %+v", p)
	}
	single := &Mm{PagesFile: "pages-1.img", PagesSize: 4 * PageSize}
	if d, _ := single.PagesDataOf(0); d.PartSize != 4*PageSize || len(d.Files) != 1 {
		t.Fatalf("PagesDataOf(0) of one file = %+v", d)
	}
	for name, mod := range map[string]func(*Mm){
		"run beyond the parts":    func(mm *Mm) { mm.Vmas[0].Pages[1].Off = PageSize },
		"parts too short":         func(mm *Mm) { mm.ParentPages[0].Size = 7 * PageSize },
		"last part empty":         func(mm *Mm) { mm.ParentPages[0].Size = 4 * PageSize },
		"part size unaligned":     func(mm *Mm) { mm.ParentPages[0].PartSize = 2*PageSize + 1 },
		"part size without parts": func(mm *Mm) { mm.ParentPages[0].Parts = nil },
		"part escaping":           func(mm *Mm) { mm.ParentPages[0].Parts[0] = "parent/../pages-1-1.img" },
		"part of another generation": func(mm *Mm) {
			mm.ParentPages[0].Parts[0] = "parent/parent/pages-1-1.img"
		},
		"part repeated":      func(mm *Mm) { mm.ParentPages[0].Parts[1] = mm.ParentPages[0].Parts[0] },
		"part is the first":  func(mm *Mm) { mm.ParentPages[0].Parts[0] = "parent/pages-1.img" },
		"own part escaping":  func(mm *Mm) { mm.PagesParts[0] = "../pages-1-1.img" },
		"own file escaping":  func(mm *Mm) { mm.PagesFile = "../pages-1.img" },
		"own parts too long": func(mm *Mm) { mm.PagesSize = 5 * PageSize },
	} {
		mm := split()
		mod(mm)
		if err := mm.Validate(); !errors.Is(err, ErrFormat) {
			t.Errorf("%s: Validate = %v, want ErrFormat", name, err)
		}
	}
}
