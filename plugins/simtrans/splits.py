"""Named base/novel splits for the ``weak_shot`` view's ``novel`` option: the class
names (as the dataset adapters name them) of the novel classes the SimTrans code uses.

- ``xian_cub``: CUB-200-2011's 50 unseen classes of the zero-shot split of Xian et al.
  (``testclasses.txt``; the SimTrans code's ``data/meta/CUB/testclasses.txt``), so the
  other 150 are base.
- ``simtrans_aircraft``: the 25 FGVC-Aircraft variants the SimTrans code (``data/
  Air_helper.py``) draws from 37 of the 100 variants with a fixed permutation; the other
  75 are base. Its web images lie in ``hardest_new_set/<variant>``.

The code's third dataset, "Car", is CompCars (not Stanford Cars): no CompCars adapter
ships here, and so no named split for it. A CompCars folder laid out as
``train/<class>/*`` + ``test/<class>/*`` reads through the ``imagefolder`` adapter (``of: imagefolder``), with the
code's novel classes given to ``novel:`` as a class-list file or a list.
"""

XIAN_CUB = (
    '043.Yellow_bellied_Flycatcher', '111.Loggerhead_Shrike', '023.Brandt_Cormorant', '098.Scott_Oriole',
    '055.Evening_Grosbeak', '130.Tree_Sparrow', '139.Scarlet_Tanager', '123.Henslow_Sparrow',
    '156.White_eyed_Vireo', '124.Le_Conte_Sparrow', '200.Common_Yellowthroat', '072.Pomarine_Jaeger',
    '173.Orange_crowned_Warbler', '028.Brown_Creeper', '119.Field_Sparrow', '165.Chestnut_sided_Warbler',
    '103.Sayornis', '180.Wilson_Warbler', '077.Tropical_Kingbird', '012.Yellow_headed_Blackbird',
    '045.Northern_Fulmar', '190.Red_cockaded_Woodpecker', '191.Red_headed_Woodpecker', '138.Tree_Swallow',
    '157.Yellow_throated_Vireo', '052.Pied_billed_Grebe', '033.Yellow_billed_Cuckoo', '164.Cerulean_Warbler',
    '031.Black_billed_Cuckoo', '143.Caspian_Tern', '094.White_breasted_Nuthatch', '070.Green_Violetear',
    '097.Orchard_Oriole', '091.Mockingbird', '104.American_Pipit', '127.Savannah_Sparrow',
    '161.Blue_winged_Warbler', '049.Boat_tailed_Grackle', '169.Magnolia_Warbler', '148.Green_tailed_Towhee',
    '113.Baird_Sparrow', '087.Mallard', '163.Cape_May_Warbler', '136.Barn_Swallow', '188.Pileated_Woodpecker',
    '084.Red_legged_Kittiwake', '026.Bronzed_Cowbird', '004.Groove_billed_Ani', '132.White_crowned_Sparrow',
    '168.Kentucky_Warbler',
)

SIMTRANS_AIRCRAFT = (
    'F/A-18', 'Eurofighter Typhoon', 'DHC-6', 'C-130', 'SR-20', 'Gulfstream V', 'DHC-1', 'CRJ-900', '757-300',
    'Fokker 70', 'PA-28', 'Saab 2000', 'Tu-154', 'Spitfire', 'Model B200', 'Saab 340', 'An-12', 'Cessna 208',
    'A321', 'DR-400', 'Cessna 525', 'ATR-72', 'Gulfstream IV', '737-200', 'Cessna 172',
)

NAMED_SPLITS = {"xian_cub": XIAN_CUB, "simtrans_aircraft": SIMTRANS_AIRCRAFT}
