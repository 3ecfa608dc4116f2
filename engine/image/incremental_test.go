package image

import (
	"errors"
	"testing"
)

func TestParentPagesNames(t *testing.T) {
	for name, ok := range map[string]bool{
		"parent/pages-1.img":               true,
		"parent/parent/pages-shmem-7.img":  true,
		"pages-1.img":                      false,
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
	escape := mm()
	escape.ParentPages[0].Name = "parent/../../etc/pages-1.img"
	if err := escape.Validate(); !errors.Is(err, ErrFormat) {
		t.Errorf("escaping parent name: Validate = %v, want ErrFormat", err)
	}
}
