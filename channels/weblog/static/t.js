(function () { var config = /*__TOUCHPOINT_CONFIG__*/{}; })();
