package benchkit

import (
	"os"
	"testing"
)

func TestParseSmaps(t *testing.T) {
	data, err := os.ReadFile("testdata/smaps")
	if err != nil {
		t.Fatal(err)
	}
	got, err := parseSmaps(data)
	if err != nil {
		t.Fatal(err)
	}
	// The text is shared; of the data mapping only its written (anonymous) pages count; the
	// heap counts whole; the anonymous pages shared with a child count in Anonymous only.
	want := Smaps{Pss: 500 + 200 + 2048 + 256, Private: 40 + 160 + 2048, Anonymous: 160 + 2048 + 512, PrivateAnon: 160 + 2048}
	if got != want {
		t.Errorf("parseSmaps = %+v, want %+v", got, want)
	}
}

func TestParseSmapsRefusesGarbage(t *testing.T) {
	if _, err := parseSmaps([]byte("Size:  x kB\n")); err == nil {
		t.Error("a size that is not a number was accepted")
	}
}
