module aviary.dev/tests/gotemplate

go 1.26
