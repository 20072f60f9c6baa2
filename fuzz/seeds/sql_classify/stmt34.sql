SELECT 1 -- trailing comment
; /* block /* nested */ comment */ SELECT 2